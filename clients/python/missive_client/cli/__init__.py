"""The ``missive`` command-line client, built on the SDK (``missive_client.Client``)."""

from __future__ import annotations

from missive_client.cli._app import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Entry point of the ``missive`` script."""
    cli(prog_name="missive")
