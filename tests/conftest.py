"""Fixtures live in harness.py (importable by tests as `harness`)."""

from harness import nats_server, spawn  # noqa: F401  (pytest fixtures)
