"""JSON API operations for the review queue of social mentions (issue 5/6): being written."""

from __future__ import annotations

from desk.routes import Operation

OPERATIONS: tuple[Operation, ...] = ()
