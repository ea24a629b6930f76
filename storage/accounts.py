"""Desk accounts and API tokens. Passwords are argon2 hashes; tokens are kept as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import Invalid, NotFound
from storage.models import Agent, ApiToken, AppSetting

ROLES = ("admin", "agent")
TOKEN_PREFIX = "clt_"
# A token's last use is written at most this often, so reads stay reads.
TOKEN_TOUCH_EVERY = timedelta(minutes=5)


def hash_password(hasher: PasswordHasher, password: str) -> str:
    return hasher.hash(password)


def verify_password(hasher: PasswordHasher, password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_password() -> str:
    return secrets.token_urlsafe(12)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def get_agent(session: AsyncSession, username: str) -> Agent | None:
    return (await session.scalars(select(Agent).where(Agent.username == username))).first()


async def count_agents(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Agent)) or 0)


async def upsert_agent(
    session: AsyncSession,
    hasher: PasswordHasher,
    *,
    username: str,
    role: str,
    password: str | None,
    now: datetime,
    display_name: str | None = None,
    language: str = "en",
) -> Agent:
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}")
    username = username.strip()
    if not username or len(username) > 64 or any(c.isspace() for c in username):
        raise Invalid("username: 1 to 64 characters, no spaces")
    agent = await get_agent(session, username)
    if agent is None:
        agent = Agent(
            username=username, role=role, language=language, active=True, created_at=now,
            display_name=display_name,
        )
        session.add(agent)
    agent.role = role
    agent.active = True
    if display_name:
        agent.display_name = display_name
    if password is not None:
        if len(password) < 8:
            raise Invalid("password: at least 8 characters")
        agent.password_hash = hash_password(hasher, password)
    await session.flush()
    return agent


async def issue_token(session: AsyncSession, username: str, now: datetime) -> str:
    agent = await get_agent(session, username)
    if agent is None:
        raise NotFound(f"no agent named {username!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(agent_id=agent.id, token_hash=_token_hash(token), created_at=now))
    return token


async def agent_for_token(session: AsyncSession, token: str, now: datetime) -> Agent | None:
    row = (
        await session.execute(
            select(ApiToken, Agent)
            .join(Agent, Agent.id == ApiToken.agent_id)
            .where(ApiToken.token_hash == _token_hash(token), ApiToken.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    api_token, agent = row
    if not agent.active:
        return None
    if api_token.last_used_at is None or now - api_token.last_used_at > TOKEN_TOUCH_EVERY:
        api_token.last_used_at = now
    return agent


async def secret_key(session: AsyncSession) -> str:
    """The key that signs sessions: generated on first start, then kept in the database so
    every process and every restart agrees on it."""
    row = await session.get(AppSetting, "secret_key")
    if row is None:
        row = AppSetting(key="secret_key", value=secrets.token_urlsafe(48))
        session.add(row)
        await session.flush()
    return row.value
