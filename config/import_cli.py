"""`careloop import` (CONTRACT §3): being written for issue 5."""

from __future__ import annotations

from typing import Any


def add_import_commands(sub: Any) -> None:
    """Adds nothing until the command lands."""
