"""The `careloop` command (CONTRACT §3). Exit 0 on success, 2 on bad usage or bad input."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from config.bootstrap import ROLES, Service, build_service, prepare, run_service
from config.logging import setup_logging
from config.settings import Settings, SettingsError, load_settings
from storage import accounts
from storage.errors import StoreError
from storage.migrate import upgrade

T = TypeVar("T")


class UsageError(Exception):
    """Bad usage or input: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # `careloop --config F run` and `careloop run --config F` alike: every (sub)command
        # takes it, and one given after the command overrides one before it.
        self.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                          help="TOML settings file")

    def error(self, message: str) -> Any:  # argparse would print the whole usage block
        raise UsageError(message)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    setup_logging(settings.log_level)
    asyncio.run(run_service(settings, args.role, sys.stdout))
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def go() -> None:
        service = build_service(settings)
        try:
            await upgrade(service.store)
        finally:
            await service.store.close()

    asyncio.run(go())
    print("database is at the latest schema")
    return 0


def cmd_agents_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    password: str | None = None
    generated = False
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("no password on standard input")

    async def go() -> None:
        nonlocal password, generated
        service = build_service(settings)
        try:
            await prepare(service, sys.stderr, first_admin=False)
            async with service.store.transaction() as session:
                existing = await accounts.get_agent(session, args.name)
                if password is None and (existing is None or existing.password_hash is None):
                    password, generated = accounts.new_password(), True
                await accounts.upsert_agent(
                    session, service.hasher, username=args.name, role=args.role,
                    password=password, now=service.rules.clock(),
                )
        finally:
            await service.store.close()

    asyncio.run(go())
    print(f"agent {args.name} ({args.role}) saved")
    if generated:
        print(f"password: {password}")
    return 0


def _in_transaction(
    settings: Settings, work: Callable[[AsyncSession, Service], Awaitable[T]]
) -> T:
    """One transaction on a prepared store (migrations run), for a command's work."""
    async def go() -> T:
        service = build_service(settings)
        try:
            await prepare(service, sys.stderr, first_admin=False)
            async with service.store.transaction() as session:
                return await work(session, service)
        finally:
            await service.store.close()

    return asyncio.run(go())


def cmd_agents_token(args: argparse.Namespace) -> int:
    print(_in_transaction(_settings(args), lambda session, service: accounts.issue_token(
        session, args.name, service.rules.clock())))
    return 0


def cmd_agents_revoke(args: argparse.Namespace) -> int:
    if (args.name is None) == (not args.token_stdin):
        raise UsageError("agents revoke: give NAME (all their tokens) or --token-stdin (one)")
    token = sys.stdin.readline().strip() if args.token_stdin else None
    if args.token_stdin and not token:
        raise UsageError("agents revoke: no token on standard input")
    count = _in_transaction(_settings(args), lambda session, service: accounts.revoke_tokens(
        session, service.rules.clock(), username=args.name, token=token))
    whose = f" of {args.name}" if args.name else ""
    print(f"revoked {count} token{'' if count == 1 else 's'}{whose}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="careloop", description="careloop customer care")
    parser.set_defaults(config=None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the service")
    run.add_argument("--role", choices=ROLES, default="all")
    run.set_defaults(func=cmd_run)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    agents = sub.add_parser("agents", help="desk accounts").add_subparsers(
        dest="agents_command", required=True
    )
    add = agents.add_parser("add", help="create or update an account")
    add.add_argument("name")
    add.add_argument("--role", choices=("admin", "agent"), required=True)
    add.add_argument("--password-stdin", action="store_true")
    add.set_defaults(func=cmd_agents_add)
    token = agents.add_parser("token", help="print a new API token")
    token.add_argument("name")
    token.set_defaults(func=cmd_agents_token)
    revoke = agents.add_parser(
        "revoke", help="revoke API tokens: every one of NAME, or the one read from stdin"
    )
    revoke.add_argument("name", nargs="?")
    revoke.add_argument("--token-stdin", action="store_true")
    revoke.set_defaults(func=cmd_agents_revoke)

    _optional_commands(sub)
    return parser


def _optional_commands(sub: Any) -> None:
    """Command groups that live beside their packages (NLU, imports, reports)."""
    from config.import_cli import add_import_commands
    from config.nlu_cli import add_nlu_commands
    from config.report_cli import add_report_commands

    add_nlu_commands(sub)
    add_import_commands(sub)
    add_report_commands(sub)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except (UsageError, SettingsError) as exc:
        print(f"careloop: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"careloop: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
