"""Typed Python client SDK for Missive (generated layers under `_generated`)."""

__all__: list[str] = []
