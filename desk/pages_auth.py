"""Desk pages: auth (issue 6): being written."""

from __future__ import annotations

from aiohttp import web


def routes(app: web.Application) -> None:
    """Adds this module's page routes to the desk app."""
