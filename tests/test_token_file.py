"""Reading server token files: Apple's real one (LF and CRLF) and every way one can be wrong."""

import base64
from datetime import UTC, datetime

import pytest
from cryptography import x509

from tests.tokenfiles import credentials, encrypt_to, encrypt_with_openssl, with_crlf, with_lf
from worker.crypto.keys import generate_key_material, load_private_key
from worker.crypto.payload import parse_token_payload
from worker.crypto.smime import decrypt_envelope, read_envelope
from worker.errors import InvalidTokenPayload, TokenFileError, UnsupportedCipher

EXPIRY = datetime(2027, 6, 1, tzinfo=UTC)


@pytest.fixture
def apple(fixture_files):
    cert = x509.load_pem_x509_certificate((fixture_files / "server-cert.pem").read_bytes())
    key = load_private_key((fixture_files / "server-key.pem").read_bytes(), source="key")
    return cert, key, (fixture_files / "server-token.p7m").read_bytes()


@pytest.fixture(scope="module")
def material():
    return generate_key_material("test", datetime(2026, 1, 1, tzinfo=UTC))


def decrypt(data, cert, key):
    envelope = read_envelope(data, source="token.p7m")
    return parse_token_payload(
        decrypt_envelope(envelope, cert, key, source="token.p7m"), source="token.p7m"
    )


@pytest.mark.parametrize("line_endings", [with_lf, with_crlf], ids=["LF", "CRLF"])
def test_apples_real_token_decrypts_with_either_line_ending(apple, line_endings):
    cert, key, data = apple
    assert data.startswith(b"Content-Type: application/pkcs7-mime")
    credentials_ = decrypt(line_endings(data), cert, key)
    assert credentials_.expires_at == datetime(2026, 1, 17, 11, 2, 21, tzinfo=UTC)
    assert credentials_.consumer_key.get_secret_value().startswith("CK_75b2eb55")
    assert len(credentials_.consumer_key.get_secret_value()) == 3 + 96


def test_apples_token_is_ber_with_indefinite_lengths(apple):
    _, _, data = apple
    body = data.split(b"\n\n", 1)[1]
    assert base64.b64decode(b"".join(body.split()))[:2] == b"\x30\x80"


def test_the_envelope_knows_which_certificate_it_is_for(apple, material):
    cert, _, data = apple
    envelope = read_envelope(data, source="t")
    assert envelope.is_for(cert)
    assert not envelope.is_for(material.certificate)


def test_a_bare_der_or_pem_pkcs7_is_accepted_too(apple):
    cert, key, data = apple
    der = base64.b64decode(b"".join(data.split(b"\n\n", 1)[1].split()))
    assert decrypt(der, cert, key).expires_at.year == 2026
    pem = b"-----BEGIN PKCS7-----\n" + base64.encodebytes(der) + b"-----END PKCS7-----\n"
    assert decrypt(pem, cert, key).expires_at.year == 2026


@pytest.mark.parametrize("aes256", [False, True], ids=["AES-128", "AES-256"])
def test_tokens_made_here_round_trip(material, aes256):
    document = credentials(EXPIRY)
    data = encrypt_to(material.cert_pem, document, aes256=aes256)
    result = decrypt(data, material.certificate, material.private_key)
    assert result.access_secret.get_secret_value() == document["access_secret"]
    assert result.expires_at == EXPIRY


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: b"", "is empty"),
        (lambda d: b"   \n", "is empty"),
        (lambda d: d[: len(d) // 2], "truncated|cut short"),
        (lambda d: d[:-200], "truncated|cut short"),
        (lambda d: d.split(b"\n\n", 1)[0] + b"\n\n", "no body"),
        (lambda d: b"hello, I am a text file\n", "not an S/MIME server token"),
        (lambda d: b"Content-Type: text/plain\n\nhello\n", "not an S/MIME server token"),
        (lambda d: d.replace(b"MIA", b"M!A", 1), "not valid base64"),
        (
            lambda d: d.split(b"\n\n", 1)[0] + b"\n\n" + base64.encodebytes(b"\x30\x03\x02\x01"),
            "truncated or damaged",
        ),
        (lambda d: b"x" * 300_000, "far larger"),
    ],
    ids=[
        "empty",
        "blank",
        "half",
        "tail-cut",
        "headers-only",
        "plain-text",
        "other-mime",
        "bad-base64",
        "junk-der",
        "huge",
    ],
)
def test_damaged_or_foreign_files_say_what_is_wrong(apple, mangle, message):
    _, _, data = apple
    with pytest.raises(TokenFileError, match=message) as caught:
        read_envelope(mangle(data), source="token.p7m")
    assert "token.p7m" in str(caught.value)


def test_a_pem_certificate_given_as_token_is_refused(fixture_files):
    data = (fixture_files / "server-cert.pem").read_bytes()
    with pytest.raises(TokenFileError, match=r"not an S/MIME server token|not encrypted"):
        read_envelope(data, source="server-cert.pem")


def test_a_signed_pkcs7_is_not_a_token(material, tmp_path):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    signed = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(b"hi")
        .add_signer(material.certificate, material.private_key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [])
    )
    with pytest.raises(TokenFileError, match="signed_data, not encrypted"):
        read_envelope(signed, source="x.p7m")


def test_a_3des_token_is_refused_naming_the_cipher(material, tmp_path):
    data = encrypt_with_openssl(material.cert_pem, credentials(EXPIRY), "des3", tmp_path)
    with pytest.raises(UnsupportedCipher, match="3DES"):
        read_envelope(data, source="old.p7m")


@pytest.mark.parametrize(
    "field",
    ["consumer_key", "consumer_secret", "access_token", "access_secret", "access_token_expiry"],
)
def test_a_token_missing_a_field_names_the_field(material, field):
    document = credentials(EXPIRY)
    del document[field]
    data = encrypt_to(material.cert_pem, document)
    with pytest.raises(InvalidTokenPayload, match=f"no '{field}' field"):
        decrypt(data, material.certificate, material.private_key)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ({**credentials(EXPIRY), "access_token_expiry": "next year"}, "access_token_expiry"),
        (
            {**credentials(EXPIRY), "access_token_expiry": "2027-01-01T00:00:00"},
            "access_token_expiry",
        ),
        ({**credentials(EXPIRY), "access_secret": 42}, "access_secret"),
        ({**credentials(EXPIRY), "consumer_key": ""}, "'consumer_key' field is unusable"),
        ({**credentials(EXPIRY), "access_secret": "   "}, "'access_secret' field is unusable"),
    ],
    ids=["bad-json", "array", "bad-expiry", "naive-expiry", "wrong-type", "empty", "blank"],
)
def test_a_token_with_bad_json_says_so_without_showing_secrets(material, document, message):
    data = encrypt_to(material.cert_pem, document)
    with pytest.raises(InvalidTokenPayload, match=message) as caught:
        decrypt(data, material.certificate, material.private_key)
    if isinstance(document, dict):
        for field in ("consumer_key", "consumer_secret", "access_token"):
            if document[field]:
                assert document[field] not in str(caught.value)


def test_credentials_never_show_in_repr(material):
    document = credentials(EXPIRY)
    result = decrypt(
        encrypt_to(material.cert_pem, document), material.certificate, material.private_key
    )
    for field in ("consumer_key", "consumer_secret", "access_token", "access_secret"):
        assert document[field] not in repr(result)
        assert document[field] not in str(result)


def test_sealed_credentials_are_packed_compactly_and_read_back():
    from worker.crypto.payload import pack_credentials, unpack_credentials

    values = {
        "consumer_key": "CK_a",
        "consumer_secret": "CS_b",
        "access_token": "AT_c",
        "access_secret": "AS_d",
    }
    packed = pack_credentials(values)
    assert b"consumer_key" not in packed
    assert unpack_credentials(packed) == values
    odd = {**values, "access_secret": "line\nbreak"}
    assert unpack_credentials(pack_credentials(odd)) == odd
