"""`careloop report` (CONTRACT §3): being written for issue 6."""

from __future__ import annotations

from typing import Any


def add_report_commands(sub: Any) -> None:
    """Adds nothing until the command lands."""
