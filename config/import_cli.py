"""`careloop import mentions FILE` (CONTRACT §3): back-fills from other tools' exports.

Exit 0 when every row was imported (or was there already), 2 on unreadable input or when some
rows were bad: those are named by line on stderr, the good ones are imported (running the
command again after fixing the file adds only what was missing).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

MAX_BAD_LINES = 20


def add_import_commands(sub: Any) -> None:
    imp = sub.add_parser("import", help="back-fill data from other tools")
    what = imp.add_subparsers(dest="import_command", required=True)
    mentions = what.add_parser(
        "mentions", help="posts from a JSON Lines or CSV export, as if a monitor had read them"
    )
    mentions.add_argument("file", help="JSON Lines or CSV: id, text, author, created_at, ...")
    mentions.add_argument(
        "--platform", default="import",
        help="platform of rows that do not say (x, mastodon; default: import)",
    )
    mentions.set_defaults(func=cmd_import_mentions)


def cmd_import_mentions(args: argparse.Namespace) -> int:
    # Imported here: `careloop --help` must not load the NLU or the store.
    from config.bootstrap import build_service
    from config.cli import UsageError
    from config.monitors import grouping, triage_rules
    from config.settings import load_settings
    from monitors.importer import BadRow, UnreadableInput, import_file
    from monitors.triage import Triage
    from storage.migrate import upgrade

    if args.platform not in ("x", "mastodon", "import"):
        raise UsageError(f"--platform must be x, mastodon or import, not {args.platform!r}")
    path = Path(args.file)
    settings = load_settings(args.config)
    bad_lines: list[str] = []

    def on_bad_row(bad: BadRow) -> None:
        if len(bad_lines) < MAX_BAD_LINES:
            print(f"careloop: {path.name}: {bad}", file=sys.stderr)
        bad_lines.append(str(bad))

    async def go() -> Any:
        service = build_service(settings)
        try:
            await upgrade(service.store)
            triage = Triage(service.interpreter, triage_rules(settings))
            return await import_file(
                service.store, triage, path, grouping(settings), platform=args.platform,
                on_bad_row=on_bad_row, clock=service.rules.clock,
            )
        finally:
            await service.interpreter.close()
            await service.store.close()

    try:
        summary = asyncio.run(go())
    except UnreadableInput as exc:
        raise UsageError(str(exc)) from None
    print(
        f"imported {summary.imported} mentions from {path.name} "
        f"({summary.already_there} already there, {summary.grouped} grouped with a copy, "
        f"{summary.flagged} flagged for review, {summary.bad} bad rows)"
    )
    if bad_lines:
        if len(bad_lines) > MAX_BAD_LINES:
            print(f"careloop: ... and {len(bad_lines) - MAX_BAD_LINES} more bad rows",
                  file=sys.stderr)
        return 2
    return 0
