"""MDM server key pairs: generate one, or import the vendor's certificate and private key.

A key pair is the RSA key the MDM server holds and the certificate uploaded to ASM/ABM, which
Apple encrypts the server token to. Pure: bytes in, objects and bytes out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from worker.errors import InvalidKeyMaterial

#: RSA modulus size of generated keys, in bits (what ASM/ABM and MDM vendors use).
RSA_KEY_BITS = 2048

#: Smallest RSA modulus imported, in bits: a shorter key can be factored, and whoever does
#: it reads every token Apple encrypts to it.
MIN_RSA_KEY_BITS = 2048

#: Validity of a generated certificate. Apple only uses it to encrypt tokens to; a long life
#: spares admins a re-upload, and `keys rotate` replaces it whenever they choose.
CERT_VALIDITY = timedelta(days=5 * 365)

#: Largest certificate or key file read, in bytes; real ones are a few KiB.
MAX_KEY_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, repr=False)
class KeyMaterial:
    """A certificate and its private key, checked to belong together."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey

    @property
    def cert_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        return certificate_fingerprint(self.cert_der)

    def private_key_der(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:  # keep the private key out of reprs and tracebacks
        return f"KeyMaterial(fingerprint={self.fingerprint[:16]}…)"


def certificate_fingerprint(cert_der: bytes) -> str:
    """SHA-256 of the certificate, lower-case hex (what `openssl x509 -fingerprint` shows)."""
    return hashlib.sha256(cert_der).hexdigest()


def format_fingerprint(hex_digest: str) -> str:
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2)).upper()


def generate_key_material(common_name: str, now: datetime) -> KeyMaterial:
    """A new RSA key and the self-signed certificate to upload to ASM/ABM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "tokenwarden"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyMaterial(certificate=cert, private_key=key)


def load_certificate(data: bytes, *, source: str) -> x509.Certificate:
    """Read a certificate in PEM or DER."""
    _check_size(data, source)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise InvalidKeyMaterial(
            f"{source} is not a certificate in PEM or DER form; "
            "give the public key certificate (.pem, .cer or .der) of the MDM server"
        ) from None


def load_sealed_key_material(cert_pem: bytes, key_der: bytes) -> KeyMaterial:
    """A key pair as tokenwarden stored it. The key was checked when it was imported or made,
    and its sealing is authenticated, so RSA's costly consistency check (tens of ms) is
    skipped here."""
    key = serialization.load_der_private_key(
        key_der, password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidKeyMaterial("a stored private key is not an RSA key")
    return KeyMaterial(certificate=x509.load_pem_x509_certificate(cert_pem), private_key=key)


def load_private_key(data: bytes, *, source: str) -> rsa.RSAPrivateKey:
    """Read an unencrypted RSA private key in PEM or DER (PKCS#1 or PKCS#8)."""
    _check_size(data, source)
    loader = (
        serialization.load_pem_private_key
        if b"-----BEGIN" in data
        else serialization.load_der_private_key
    )
    try:
        key = loader(data, password=None)
    except TypeError:
        raise InvalidKeyMaterial(
            f"{source} is protected by a passphrase; export the key without one "
            "(openssl pkey -in KEY -out PLAIN.pem) and import that"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidKeyMaterial(
            f"{source} is not a private key in PEM or DER form; give the MDM server's RSA key"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidKeyMaterial(
            f"{source} holds a {type(key).__name__.removeprefix('_')} key; Apple encrypts server "
            "tokens to RSA keys only"
        )
    if key.key_size < MIN_RSA_KEY_BITS:
        raise InvalidKeyMaterial(
            f"{source} is a {key.key_size}-bit RSA key, too weak to protect server tokens; use "
            f"at least {MIN_RSA_KEY_BITS} bits, or leave --cert and --key out to generate a pair"
        )
    return key


def import_key_material(
    cert_data: bytes, key_data: bytes, *, cert_source: str, key_source: str
) -> KeyMaterial:
    """The vendor's certificate and key, after checking that the key opens the certificate."""
    cert = load_certificate(cert_data, source=cert_source)
    key = load_private_key(key_data, source=key_source)
    cert_public = cert.public_key()
    if not isinstance(cert_public, rsa.RSAPublicKey):
        raise InvalidKeyMaterial(
            f"{cert_source} is not an RSA certificate; "
            "Apple encrypts server tokens to RSA keys only"
        )
    if cert_public.public_numbers() != key.public_key().public_numbers():
        raise InvalidKeyMaterial(
            f"the private key {key_source} does not belong to the certificate {cert_source}; "
            "give the key that was generated with that certificate"
        )
    return KeyMaterial(certificate=cert, private_key=key)


def _check_size(data: bytes, source: str) -> None:
    if not data.strip():
        raise InvalidKeyMaterial(f"{source} is empty")
    if len(data) > MAX_KEY_FILE_BYTES:
        raise InvalidKeyMaterial(
            f"{source} is {len(data)} bytes, too large for a certificate or key; check the file"
        )
