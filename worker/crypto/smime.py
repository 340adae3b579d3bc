"""Reading the server token file Apple's portal delivers: S/MIME around PKCS#7 EnvelopedData.

Apple writes the EnvelopedData in BER with indefinite lengths, which `cryptography` refuses, so
asn1crypto reads the BER and re-encodes it as DER; `cryptography` then does the decryption.
Looking at the envelope ourselves first is also what lets errors say what is wrong ("encrypted to
a different certificate", "uses 3DES") instead of a padding failure.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
from dataclasses import dataclass

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from worker.errors import TokenFileError, UnsupportedCipher, WrongRecipient

#: Largest token file read, in bytes. Apple's are about 1.5 KiB.
MAX_TOKEN_FILE_BYTES = 256 * 1024

#: Content ciphers `cryptography` decrypts in PKCS#7 (asn1crypto's names).
SUPPORTED_CONTENT_CIPHERS = {"aes128_cbc": "AES-128-CBC", "aes256_cbc": "AES-256-CBC"}

#: Readable names for ciphers we refuse, so the error names them.
CIPHER_NAMES = {
    "des": "DES",
    "tripledes_3key": "3DES",
    "rc2": "RC2",
    "rc5": "RC5",
    "aes192_cbc": "AES-192-CBC",
}

_PKCS7_MIME_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}


@dataclass(frozen=True)
class Recipient:
    issuer: asn1_x509.Name
    serial_number: int

    def describe(self) -> str:
        return f"issuer {self.issuer.human_friendly}, serial {self.serial_number:X}"

    def matches(self, certificate: x509.Certificate) -> bool:
        cert = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
        return cert.issuer == self.issuer and cert.serial_number == self.serial_number


@dataclass(frozen=True, repr=False)
class Envelope:
    """A token file's EnvelopedData, re-encoded as DER, and who it is encrypted to."""

    der: bytes
    recipients: tuple[Recipient, ...]
    cipher: str

    def is_for(self, certificate: x509.Certificate) -> bool:
        return any(r.matches(certificate) for r in self.recipients)

    def __repr__(self) -> str:
        return f"Envelope(cipher={self.cipher!r}, recipients={len(self.recipients)})"


def read_envelope(raw: bytes, *, source: str) -> Envelope:
    """Unwrap S/MIME (or bare PEM/DER PKCS#7) down to a checked EnvelopedData."""
    if not raw.strip():
        raise TokenFileError(f"{source} is empty; download the server token again from ASM/ABM")
    if len(raw) > MAX_TOKEN_FILE_BYTES:
        raise TokenFileError(
            f"{source} is {len(raw)} bytes, far larger than a server token; check the file"
        )
    ber = _pkcs7_bytes(raw, source)
    return _parse_enveloped_data(ber, source)


def decrypt_envelope(
    envelope: Envelope,
    certificate: x509.Certificate,
    private_key: rsa.RSAPrivateKey,
    *,
    source: str,
) -> bytes:
    """Decrypt with the key pair the envelope is addressed to; returns the inner MIME part."""
    try:
        return pkcs7.pkcs7_decrypt_der(envelope.der, certificate, private_key, [])
    except ValueError:
        raise TokenFileError(
            f"{source} is addressed to this server's certificate but does not decrypt with its "
            "key: the file is damaged; download the server token again"
        ) from None


def _pkcs7_bytes(raw: bytes, source: str) -> bytes:
    stripped = raw.lstrip()
    if stripped[:1] == b"\x30":  # bare DER/BER, as `openssl smime -pk7out -outform DER` writes
        return stripped
    if stripped.startswith(b"-----BEGIN PKCS7-----"):
        return _b64(_between(stripped, b"-----BEGIN PKCS7-----", b"-----END PKCS7-----"), source)
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    content_type = message.get_content_type()
    if message.get("Content-Type") is None or content_type not in _PKCS7_MIME_TYPES:
        header = message.get("Content-Type")
        # Escaped: the header is the file's, and may hold terminal escape codes.
        found = f"Content-Type {str(header)[:80]!r}" if header is not None else "no Content-Type"
        raise TokenFileError(
            f"{source} is not an S/MIME server token ({found}); give the "
            "<ServerName>_Token_<date>_smime.p7m file downloaded from ASM/ABM"
        )
    body = message.get_payload()
    if not isinstance(body, str) or not body.strip():
        raise TokenFileError(f"{source} has S/MIME headers but no body: the download was cut short")
    encoding = (message.get("Content-Transfer-Encoding") or "base64").strip().lower()
    if encoding != "base64":
        raise TokenFileError(
            f"{source} uses Content-Transfer-Encoding {encoding!r}; server tokens are base64"
        )
    return _b64(body.encode("ascii", errors="replace"), source)


def _between(data: bytes, start: bytes, end: bytes) -> bytes:
    _, _, rest = data.partition(start)
    body, found, _ = rest.partition(end)
    return body if found else rest


def _b64(text: bytes, source: str) -> bytes:
    compact = b"".join(text.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        reason = "was cut short" if len(compact) % 4 else "holds characters that are not base64"
        raise TokenFileError(
            f"{source} is not valid base64 after its headers (it {reason}); "
            "download the server token again"
        ) from None


def _parse_enveloped_data(ber: bytes, source: str) -> Envelope:
    damaged = TokenFileError(
        f"{source} is truncated or damaged (its PKCS#7 data does not parse); "
        "download the server token again"
    )
    try:
        info = cms.ContentInfo.load(ber)
        content_type = info["content_type"].native
        if content_type != "enveloped_data":
            raise TokenFileError(
                f"{source} holds PKCS#7 {content_type}, not encrypted (enveloped) data; "
                "it is not a server token"
            )
        enveloped = info["content"]
        der = info.dump(force=True)  # parses every part: damage shows up here
        recipients = tuple(_recipients(enveloped, source))
        algorithm = enveloped["encrypted_content_info"]["content_encryption_algorithm"]
        cipher = algorithm["algorithm"].native
        if enveloped["encrypted_content_info"]["encrypted_content"].native is None:
            raise damaged
    except TokenFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        raise damaged from None
    if cipher not in SUPPORTED_CONTENT_CIPHERS:
        name = CIPHER_NAMES.get(cipher, str(cipher))
        raise UnsupportedCipher(
            f"{source} is encrypted with {name}, which tokenwarden does not accept; "
            "Apple's server tokens use AES-128-CBC: download the token again from ASM/ABM"
        )
    return Envelope(der=der, recipients=recipients, cipher=SUPPORTED_CONTENT_CIPHERS[cipher])


def _recipients(enveloped: cms.EnvelopedData, source: str):
    for info in enveloped["recipient_infos"]:
        if info.name != "ktri":
            raise UnsupportedCipher(
                f"{source} uses a {info.name} recipient; server tokens use RSA key transport"
            )
        transport = info.chosen
        algorithm = transport["key_encryption_algorithm"]["algorithm"].native
        if algorithm not in {"rsaes_pkcs1v15", "rsa"}:
            raise UnsupportedCipher(
                f"{source} wraps its key with {algorithm}; server tokens use RSA PKCS#1 v1.5"
            )
        rid = transport["rid"]
        if rid.name != "issuer_and_serial_number":
            raise UnsupportedCipher(
                f"{source} names its recipient by {rid.name}; server tokens use issuer and serial"
            )
        yield Recipient(
            issuer=rid.chosen["issuer"], serial_number=rid.chosen["serial_number"].native
        )


def describe_mismatch(
    envelope: Envelope, source: str, known: list[tuple[str, x509.Certificate]]
) -> WrongRecipient:
    """The error for a token encrypted to none of the server's certificates."""
    addressed = "; ".join(r.describe() for r in envelope.recipients) or "no recipient"
    held = ", ".join(f"{label} serial {cert.serial_number:X}" for label, cert in known) or "none"
    return WrongRecipient(
        f"{source} is encrypted to a different certificate ({addressed}) than this server holds "
        f"({held}); upload this server's certificate (`tokenwarden keys export`) in ASM/ABM, "
        "then download a new token"
    )
