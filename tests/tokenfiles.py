"""Server token files made in the test, shaped like Apple's, encrypted to a certificate we hold.

Apple's own file (the fixture) is the ground truth for the format; these let tests cover what the
fixture cannot: other expiries, other consumers, missing fields, other ciphers.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from worker.timefmt import format_rfc3339


def credentials(expires_at: datetime, consumer_key: str | None = None) -> dict[str, str]:
    return {
        "consumer_key": consumer_key or "CK_" + secrets.token_hex(48),
        "consumer_secret": "CS_" + secrets.token_hex(20),
        "access_token": "AT_" + secrets.token_hex(40),
        "access_secret": "AS_" + secrets.token_hex(20),
        "access_token_expiry": format_rfc3339(expires_at),
    }


def inner_part(document: dict | str) -> bytes:
    body = document if isinstance(document, str) else json.dumps(document, separators=(",", ":"))
    return (
        "Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        f"-----BEGIN MESSAGE-----\n{body}\n-----END MESSAGE-----\n"
    ).encode()


def encrypt_to(cert_pem: bytes | str, document: dict | str, *, aes256: bool = False) -> bytes:
    """An S/MIME file as the portal delivers it, encrypted to `cert_pem`."""
    if isinstance(cert_pem, str):
        cert_pem = cert_pem.encode()
    cert = x509.load_pem_x509_certificate(cert_pem)
    builder = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(inner_part(document))
        .add_recipient(cert)
        .set_content_encryption_algorithm(algorithms.AES256 if aes256 else algorithms.AES128)
    )
    return builder.encrypt(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.Binary])


def encrypt_with_openssl(cert_pem: bytes | str, document: dict, cipher: str, tmp: Path) -> bytes:
    """For ciphers `cryptography` will not write (3DES): openssl's smime command."""
    if isinstance(cert_pem, str):
        cert_pem = cert_pem.encode()
    (tmp / "cert.pem").write_bytes(cert_pem)
    (tmp / "inner.txt").write_bytes(inner_part(document))
    return subprocess.run(
        [
            "openssl",
            "smime",
            "-encrypt",
            f"-{cipher}",
            "-binary",
            "-in",
            str(tmp / "inner.txt"),
            str(tmp / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    ).stdout


def with_crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def with_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")
