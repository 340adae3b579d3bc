import pytest

from worker.crypto.sealing import Keyring, generate_master_key
from worker.errors import ConfigError, SecretsError


def test_a_sealed_value_opens_in_its_own_context_only():
    keyring = Keyring.from_text(generate_master_key(), where="test")
    sealed = keyring.seal(b"AS_secret", "tw:token:a#credentials")
    assert b"AS_secret" not in sealed.encode()
    assert keyring.open(sealed, "tw:token:a#credentials") == b"AS_secret"
    with pytest.raises(SecretsError, match="integrity"):
        keyring.open(sealed, "tw:token:b#credentials")


def test_values_sealed_under_an_older_key_open_after_a_new_primary_is_added():
    old, new = generate_master_key(), generate_master_key()
    sealed = Keyring.from_text(old, where="test").seal(b"x", "ctx")
    rotated = Keyring.from_text(f"{new},{old}", where="test")
    assert rotated.open(sealed, "ctx") == b"x"
    assert rotated.needs_reseal(sealed)
    assert not rotated.needs_reseal(rotated.seal(b"x", "ctx"))


def test_a_value_sealed_under_an_unknown_key_names_the_key():
    sealed = Keyring.from_text(generate_master_key(), where="test").seal(b"x", "ctx")
    other = Keyring.from_text(generate_master_key(), where="test")
    with pytest.raises(SecretsError, match=sealed.split(":")[1]):
        other.open(sealed, "ctx")


@pytest.mark.parametrize("text", ["short", "!!!!", generate_master_key() + "AAAA"])
def test_malformed_master_keys_are_refused_without_echoing_them(text):
    with pytest.raises(ConfigError) as caught:
        Keyring.from_text(text, where="TOKENWARDEN_MASTER_KEY")
    assert text not in str(caught.value)
    assert "generate-key" in str(caught.value)


def test_key_file_comments_and_blank_lines_are_ignored():
    key = generate_master_key()
    keyring = Keyring.from_text(f"# a comment, with a comma\n\n{key}\n", where="file")
    assert keyring.key_ids == [Keyring.from_text(key, where="x").primary.key_id]
