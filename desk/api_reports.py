"""JSON API operations for reports (issue 6): being written."""

from __future__ import annotations

from desk.routes import Operation

OPERATIONS: tuple[Operation, ...] = ()
