"""deploy/ works as shipped: every YAML and JSON file parses, every command a manifest, unit or
script runs is a tokenwarden command with options it has, and every TOKENWARDEN_* variable they
set is a setting tokenwarden reads."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

import worker.config
from worker.cli.main import cli

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file())
STRUCTURED = [p for p in FILES if p.suffix in (".yaml", ".yml", ".json")]

#: The settings tokenwarden reads: named in worker/config.py's docstring (the one reader of
#: the environment lists them all there), plus the local Redis's port for `make run`.
SETTINGS = set(re.findall(r"\b(?:TOKENWARDEN_[A-Z0-9_]+|REDIS_URL)\b", worker.config.__doc__))
SETTINGS |= {"TOKENWARDEN_LOCAL_REDIS_PORT"}


def documents(path: Path) -> list:
    text = path.read_text()
    if path.suffix == ".json":
        return [json.loads(text)]
    return [d for d in yaml.safe_load_all(text) if d is not None]


@pytest.mark.parametrize("path", STRUCTURED, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_structured_file_parses(path):
    assert documents(path), f"{path} holds nothing"


def containers(manifest: dict) -> list[dict]:
    spec = manifest.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", [])


def tokenwarden_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `tokenwarden`) of every command deploy/ runs."""
    found = []
    for path in STRUCTURED:
        for manifest in documents(path):
            for container in containers(manifest) if isinstance(manifest, dict) else []:
                argv = [*container.get("command", []), *container.get("args", [])]
                if argv and argv[0] == "tokenwarden":
                    found.append((f"{path.name}:{container['name']}", argv[1:]))
    for path in FILES:
        for line in path.read_text().splitlines() if path.suffix in (".service", ".sh") else []:
            argv = _invoked(line)
            if argv is not None:
                found.append((path.name, argv))
    return found


def _invoked(line: str) -> list[str] | None:
    """The argv after the tokenwarden binary a unit's ExecStart or a script's line runs."""
    line = line.strip()
    if line.startswith("#"):
        return None
    if line.startswith("ExecStart="):
        line = line.removeprefix("ExecStart=")
    match = re.search(r"(?:^|\s)(?:\S*/)?bin/tokenwarden((?:\s+[^\s|;&]+)*)", line)
    return shlex.split(match.group(1)) if match else None


def test_deploy_runs_tokenwarden_in_each_place():
    commands = tokenwarden_commands()
    assert all(argv for _, argv in commands), commands  # each names its command
    where = {w.split(":")[0] for w, _ in commands}
    assert {"tokenwarden.yaml", "tokenwarden-serve.service", "tokenwarden-worker.service",
            "tokenwarden-scheduler.service", "run.sh"} <= where  # fmt: skip


@pytest.mark.parametrize("where, argv", tokenwarden_commands(), ids=lambda v: str(v))
def test_every_command_deploy_runs_exists_with_its_options(where, argv):
    command: click.Command = cli
    words = list(argv)
    while words and isinstance(command, click.Group) and not words[0].startswith("-"):
        sub = command.get_command(click.Context(command), words[0])
        assert sub is not None, f"{where}: `tokenwarden {' '.join(argv)}`: no command {words[0]!r}"
        command, words = sub, words[1:]
    # Parsed as click would at start-up: an unknown option, a bad value or an extra argument
    # is an error here, as it would be in the pod.
    command.make_context(command.name, list(words))


def test_every_variable_deploy_sets_is_a_setting():
    used = set()
    for path in FILES:
        used |= set(re.findall(r"\b(?:TOKENWARDEN_[A-Z0-9_]+|REDIS_URL)\b", path.read_text()))
    assert used, "deploy/ sets no setting at all?"
    assert used - SETTINGS == set()


def test_the_kubernetes_serve_has_probes_a_service_and_a_scrape():
    manifests = [m for p in STRUCTURED if "kubernetes" in p.parts for m in documents(p)]
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    serve = by_kind[("Deployment", "tokenwarden-serve")]
    [container] = containers(serve)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    annotations = serve["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    service = by_kind[("Service", "tokenwarden-serve")]
    monitor = by_kind[("ServiceMonitor", "tokenwarden")]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names


def test_the_kubernetes_serve_listens_where_its_probes_service_and_scrape_look():
    manifests = [m for p in STRUCTURED if "kubernetes" in p.parts for m in documents(p)]
    serve = next(m for m in manifests if m["metadata"]["name"] == "tokenwarden-serve"
                 and m["kind"] == "Deployment")  # fmt: skip
    [container] = containers(serve)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    port = int(env["TOKENWARDEN_HTTP_LISTEN"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == port
    annotations = serve["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", port)
    service = next(m for m in manifests if m["kind"] == "Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {"http", port}
