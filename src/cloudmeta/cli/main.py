"""Entry point: global options, then one subcommand group per component.

Each component registers its commands in its own module under ``cloudmeta.cli``; this file
only wires them together, so adding a command never touches another component's file.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import click

from cloudmeta import __version__
from cloudmeta.config import Config, ConfigError, load_config
from cloudmeta.logs import get_logger, setup_logging

__all__ = ["cli", "main", "pass_config"]


class _Context:
    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from exc
            setup_logging(self._config.debug, self._config.log_format)
            for line in self._config.deprecations:  # once per process, at start
                get_logger("config").warning("deprecated option", detail=line)
        return self._config


P = ParamSpec("P")
R = TypeVar("R")


def pass_config(func: Callable[Concatenate[Config, P], R]) -> Callable[P, R]:
    """Decorator giving a command the loaded :class:`Config` as its first argument."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        context = click.get_current_context().find_object(_Context)
        if context is None:  # pragma: no cover - only when called outside the CLI
            raise click.UsageError("no cloudmeta context")
        return func(context.config, *args, **kwargs)

    return wrapper


class _LazyGroup(click.Group):
    """Imports a component's command module only when one of its commands runs.

    ``cloudmeta network list`` then loads the admin client, not SQLAlchemy, pyroute2 and the
    agents: a CLI call costs a fraction of a second instead of importing the whole system.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _COMMAND_MODULES:
            _load(_COMMAND_MODULES[cmd_name])
            command = super().get_command(ctx, cmd_name)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML configuration file (default /etc/cloudmeta/cloudmeta.toml if it exists).",
)
@click.version_option(__version__, prog_name="cloudmeta")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """cloudmeta: the instance metadata service, the way OpenStack serves it."""
    ctx.obj = _Context(config_path)


@cli.group("config")
def config_group() -> None:
    """Inspect the effective configuration."""


@config_group.command("show")
@pass_config
def config_show(config: Config) -> None:
    """Print the effective configuration (file + environment), secrets masked."""
    click.echo(json.dumps(config.masked(), indent=2, sort_keys=True))


def _load(module_name: str) -> None:
    import importlib

    module = importlib.import_module(f"cloudmeta.cli.{module_name}")
    for command in module.COMMANDS:
        cli.add_command(command)


# Command name -> the component module (under cloudmeta.cli) whose COMMANDS define it.
_COMMAND_MODULES: dict[str, str] = {
    "ns-metadata-proxy": "proxy",
    "db": "services",
    **dict.fromkeys(
        ("project", "keypair", "network", "subnet", "router", "port", "server"), "inventory"
    ),
    "identity": "identity",
    "lab": "lab",
    **dict.fromkeys(("api", "all-in-one", "agent", "dhcp-agent", "l3-agent"), "daemons"),
}


def main() -> None:
    """Issue 2's exit contract: 0, or 1 with a one-line error on stderr. Click's standalone
    mode would exit 2 on usage errors with a usage block, so errors are reported here."""
    try:
        code = cli.main(prog_name="cloudmeta", standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "cloudmeta"
        click.echo(f"Error: {exc.format_message()} (see '{path} --help')", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(1)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
