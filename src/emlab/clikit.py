"""What every CLI command shares: how a user error ends a command."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(err: Exception) -> NoReturn:
    """Print `error: <message>` in red on stderr and exit with status 2 (no traceback)."""
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)
