"""Writing files safely (issue 9, item 10): `keys export -o` and `keys rotate -o` write only a
new path or a regular file, through a temporary file renamed over it; anything else is one
line, and a refused rotation stages nothing."""

import os
import stat

import pytest

from tests.helpers import assert_refused

COMMANDS = (("keys", "export", "Lab"), ("keys", "rotate", "Lab"))


def special_files(tmp_path):
    """A symbolic link (to a file that must stay untouched), a named pipe, and a device node
    like /dev/null when this user may make one."""
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "link.pem"
    link.symlink_to(target)
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    made = [(link, "a symbolic link", stat.S_ISLNK), (fifo, "a named pipe", stat.S_ISFIFO)]
    device = tmp_path / "null.pem"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        made.append((device, "a device", stat.S_ISCHR))
    except PermissionError:
        pass
    return target, made


@pytest.mark.parametrize("command", COMMANDS, ids=["export", "rotate"])
def test_output_to_anything_but_a_regular_file_is_refused_and_left_alone(
    cli, snapshot, tmp_path, command
):
    # Given a server, and paths that are not regular files
    cli("servers", "add", "Lab")
    target, made = special_files(tmp_path)
    for path, kind, is_kind in made:
        # When the certificate is to go there: one line, nothing stored changed (no key staged)
        assert_refused(cli, snapshot, (*command, "-o", str(path)), f"{path} is {kind}")
        # Then the path is what it was, and no temporary file is left beside it
        assert is_kind(os.lstat(path).st_mode)
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["precious.txt", *(p.name for p, _, _ in made)]
    )


@pytest.mark.parametrize("command", COMMANDS, ids=["export", "rotate"])
def test_a_regular_file_is_replaced_whole_and_keeps_its_mode(cli, tmp_path, command):
    cli("servers", "add", "Lab")
    path = tmp_path / "cert.pem"
    path.write_text("old")
    path.chmod(0o600)
    result = cli(*command, "-o", str(path))
    assert result.exit_code == 0, result.output
    assert path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["cert.pem"]


def test_a_new_path_is_written(cli, tmp_path):
    cli("servers", "add", "Lab")
    path = tmp_path / "new.pem"
    assert cli("keys", "export", "Lab", "-o", str(path)).exit_code == 0
    assert path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert [p.name for p in tmp_path.iterdir()] == ["new.pem"]
