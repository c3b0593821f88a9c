"""``cloudmeta identity``: check a signed instance-identity document offline."""

from __future__ import annotations

from pathlib import Path

import click

from cloudmeta.api.metadata.signing import CERT_FILE, verify_signature
from cloudmeta.cli.main import pass_config
from cloudmeta.config import Config

__all__ = ["COMMANDS"]

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("identity")
def identity_group() -> None:
    """Signed instance-identity documents (/latest/dynamic/instance-identity/)."""


@identity_group.command("verify")
@click.argument("document", type=_FILE)
@click.option(
    "--signature",
    "signature_file",
    type=_FILE,
    default=None,
    help="The base64 signature (default: DOCUMENT.sig, or DOCUMENT's sibling 'signature').",
)
@click.option(
    "--cert",
    "cert_file",
    type=_FILE,
    default=None,
    help=f"The API's public certificate (default: <state_path>/{CERT_FILE}).",
)
@pass_config
def verify_command(
    config: Config, document: Path, signature_file: Path | None, cert_file: Path | None
) -> None:
    """Check that DOCUMENT was signed by this deployment's metadata API."""
    if signature_file is None:
        candidates = [document.with_name(document.name + ".sig"), document.with_name("signature")]
        signature_file = next((p for p in candidates if p.is_file()), None)
        if signature_file is None:
            raise click.UsageError(f"no signature found next to {document}; pass --signature FILE")
    cert_path = cert_file or config.state_path / CERT_FILE
    try:
        cert = cert_path.read_bytes()
    except OSError as exc:
        raise click.ClickException(
            f"cannot read the certificate {cert_path}: {exc.strerror}; pass --cert FILE"
        ) from exc
    try:
        ok = verify_signature(cert, document.read_bytes(), signature_file.read_bytes())
    except ValueError as exc:
        raise click.ClickException(f"{cert_path} is not a PEM certificate: {exc}") from exc
    if not ok:
        raise click.ClickException(
            f"{document}: signature does NOT match (certificate {cert_path})"
        )
    click.echo(f"{document}: signature OK (certificate {cert_path})")


@identity_group.command("cert")
@pass_config
def cert_command(config: Config) -> None:
    """Print the public certificate instances' documents are signed with."""
    path = config.state_path / CERT_FILE
    try:
        click.echo(path.read_text(), nl=False)
    except OSError as exc:
        raise click.ClickException(
            f"cannot read {path}: {exc.strerror}; the metadata API creates it on first start"
        ) from exc


COMMANDS: list[click.Command] = [identity_group]
