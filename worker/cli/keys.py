"""`tokenwarden keys ...`: the certificate to upload to ASM/ABM, and key rotation."""

from __future__ import annotations

import sys

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from worker import registry
from worker.bootstrap import App
from worker.cli.files import OutputFile
from worker.cli.output import note, org_option, pass_app
from worker.crypto.keys import format_fingerprint
from worker.errors import InvalidInput
from worker.records import KeyPair


@click.group("keys")
def group() -> None:
    """Server key pairs and the certificates uploaded to Apple."""


format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["pem", "der"]),
    default="pem",
    show_default=True,
    help="Certificate encoding.",
)
output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the certificate to this file instead of stdout.",
)


@group.command("export")
@click.argument("name")
@org_option
@format_option
@output_option
@pass_app
def export(app: App, name: str, org: str | None, fmt: str, output: str | None) -> None:
    """Write the certificate to upload for server NAME (the staged one, if a rotation waits)."""
    server = registry.resolve_server(app.store, name, org)
    pair = registry.certificate_to_upload(app.store, server)
    CertificateOutput(fmt, output).write(pair)
    if pair.state == "staged":
        note("this is the staged key's certificate: upload it, then install the token you download")


@group.command("rotate")
@click.argument("name")
@org_option
@format_option
@output_option
@click.option(
    "--replace-staged",
    is_flag=True,
    help="Discard a key already staged (and never used) for a new one.",
)
@pass_app
def rotate(
    app: App, name: str, org: str | None, fmt: str, output: str | None, replace_staged: bool
) -> None:
    """Stage a new key pair for NAME; it becomes current when a token made for it is installed."""
    server = registry.resolve_server(app.store, name, org)
    destination = CertificateOutput(fmt, output)
    try:
        rotation = registry.rotate_key(
            app.store, server, now=app.now(), replace_staged=replace_staged
        )
    except BaseException:
        destination.discard()
        raise
    pair = rotation.pair
    if rotation.discarded is not None:
        note(f"discarded the key staged on {rotation.discarded.created_at:%Y-%m-%d}, never used")
    note(
        f"staged a new key pair for {server.name!r}: SHA-256 {format_fingerprint(pair.fingerprint)}"
    )
    destination.write(pair)
    # Recorded and decided with the staging, as if any other source had sent it.
    note(f"recorded {rotation.event.type} {rotation.event.id}")
    if rotation.doomed_token_id is not None:
        note(
            "the installed token is encrypted to the old key: a replacement is open "
            "(`tokenwarden replacements list`)"
        )
    note(
        "upload this certificate for the server in ASM/ABM, download a new token and install it; "
        "until then the current key and token stay in use"
    )


class CertificateOutput:
    """Where a certificate goes, checked before anything is changed: a refused output must
    not leave a key staged that the user never saw."""

    def __init__(self, fmt: str, output: str | None):
        self.fmt = fmt
        self._file = OutputFile(output, "the certificate") if output else None
        if self._file is None and fmt == "der" and sys.stdout.isatty():
            raise InvalidInput("DER is binary; give -o FILE to write it")

    def write(self, pair: KeyPair) -> None:
        cert = x509.load_pem_x509_certificate(pair.cert_pem.encode())
        encoding = serialization.Encoding.DER if self.fmt == "der" else serialization.Encoding.PEM
        data = cert.public_bytes(encoding)
        if self._file is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        self._file.write(data)
        note(f"wrote {self._file.path}")

    def discard(self) -> None:
        if self._file is not None:
            self._file.discard()
