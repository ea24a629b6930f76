"""Desk accounts and API tokens. Passwords are argon2 hashes; tokens are kept as SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ColumnElement, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import Conflict, Invalid, NotFound
from storage.models import Agent, ApiToken, AppSetting, EndedSession, LoginAttempt

ROLES = ("admin", "agent")
TOKEN_PREFIX = "clt_"
# A token's last use is written at most this often, so reads stay reads.
TOKEN_TOUCH_EVERY = timedelta(minutes=5)
LANGUAGES = ("en", "zh")
# CONTRACT §7: after 5 failed logins for one account or one address within 15 minutes, logins
# are refused until the oldest of those failures is older than the window.
THROTTLE_FAILURES = 5
THROTTLE_WINDOW = timedelta(minutes=15)
# Failed-login rows older than this are of no use to anyone; they are pruned as new ones come.
ATTEMPTS_KEPT = timedelta(days=1)
MIN_PASSWORD = 8


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
    existing = agent is not None
    if agent is None:
        agent = Agent(
            username=username, role=role, language=language, active=True, created_at=now,
            display_name=display_name,
        )
        session.add(agent)
    elif agent.role == "admin" and role != "admin" and agent.active:
        if await _other_active_admins(session, agent.id) == 0:
            raise Conflict("the last active admin cannot lose the admin role")
    agent.role = role
    agent.active = True
    if display_name:
        agent.display_name = display_name
    new_password = False
    if password is not None:
        if len(password) < 8:
            raise Invalid("password: at least 8 characters")
        # The same password again (the admin from the settings, at every start) changes
        # nothing; a new one replaces the hash and, as set_password does, ends the sessions.
        if not (agent.password_hash and verify_password(hasher, agent.password_hash, password)):
            agent.password_hash = hash_password(hasher, password)
            new_password = True
    await session.flush()
    if existing and new_password:
        await bump_session_epoch(session, agent.id)
    return agent


async def issue_token(session: AsyncSession, username: str, now: datetime) -> str:
    agent = await get_agent(session, username)
    if agent is None:
        raise NotFound(f"no agent named {username!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(agent_id=agent.id, token_hash=_token_hash(token), created_at=now))
    return token


async def revoke_tokens(
    session: AsyncSession, now: datetime, *, username: str | None = None,
    token: str | None = None,
) -> int:
    """Revokes one token (given whole) or every live token of an agent; returns how many.
    Processes that cached the token stop accepting it within the cache's 30 s."""
    where: list[ColumnElement[bool]] = [ApiToken.revoked_at.is_(None)]
    if token is not None:
        where.append(ApiToken.token_hash == _token_hash(token))
    else:
        agent = await get_agent(session, username or "")
        if agent is None:
            raise NotFound(f"no agent named {username!r}")
        where.append(ApiToken.agent_id == agent.id)
    result = await session.execute(update(ApiToken).where(*where).values(revoked_at=now))
    return int(getattr(result, "rowcount", 0) or 0)


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


# --- desk sessions ended by logout ----------------------------------------------------

async def end_session(
    session: AsyncSession, agent_id: int, nonce: str, expires_at: datetime, now: datetime
) -> None:
    """The desk session with this nonce is over (its agent logged out): its cookie is refused
    from now on. Sessions that would have expired anyway are forgotten here."""
    await session.execute(delete(EndedSession).where(EndedSession.expires_at < now))
    if await session.get(EndedSession, nonce[:64]) is None:
        session.add(EndedSession(nonce=nonce[:64], agent_id=agent_id, expires_at=expires_at))


def session_ended(nonce: str) -> ColumnElement[bool]:
    """For the query that loads a session's agent: true when that session was logged out."""
    return exists().where(EndedSession.nonce == nonce[:64])


# --- login throttle -----------------------------------------------------------------------
# The state lives in the database, so every desk process behind a balancer counts the same
# failures. Two processes racing on the fifth failure may let one extra guess through; the
# throttle is about thousands of guesses, not one.

async def login_throttled(
    session: AsyncSession, username: str, address: str, now: datetime
) -> bool:
    """True while the account or the address has had too many recent failures."""
    since = now - THROTTLE_WINDOW
    by_account = await session.scalar(
        select(func.count()).select_from(LoginAttempt)
        .where(LoginAttempt.username == username[:64], LoginAttempt.at > since)
    )
    if int(by_account or 0) >= THROTTLE_FAILURES:
        return True
    by_address = await session.scalar(
        select(func.count()).select_from(LoginAttempt)
        .where(LoginAttempt.address == address[:64], LoginAttempt.at > since)
    )
    return int(by_address or 0) >= THROTTLE_FAILURES


async def record_failed_login(
    session: AsyncSession, username: str, address: str, now: datetime
) -> None:
    await session.execute(
        delete(LoginAttempt).where(
            or_(LoginAttempt.username == username[:64], LoginAttempt.address == address[:64]),
            LoginAttempt.at < now - ATTEMPTS_KEPT,
        )
    )
    session.add(LoginAttempt(username=username[:64], address=address[:64], at=now))


async def forget_failed_logins(session: AsyncSession, username: str) -> None:
    """After a successful login the account starts afresh. Only failures typed against this
    account go: guesses at other accounts from the same address still count."""
    await session.execute(delete(LoginAttempt).where(LoginAttempt.username == username[:64]))


async def check_login(
    session: AsyncSession, hasher: PasswordHasher, username: str, password: str
) -> Agent | None:
    """The active agent whose password this is, or None. An unknown name costs one hash too,
    so the answer time does not tell which accounts exist."""
    agent = await get_agent(session, username) if len(username) <= 64 else None
    if agent is None or not agent.password_hash:
        # As slow as a verify; the result is thrown away. Off the event loop: argon2 is slow
        # on purpose, and other agents' pages should not wait for it.
        await asyncio.to_thread(hasher.hash, password)
        return None
    ok = await asyncio.to_thread(verify_password, hasher, agent.password_hash, password)
    if not ok or not agent.active:
        return None
    if hasher.check_needs_rehash(agent.password_hash):
        agent.password_hash = hash_password(hasher, password)
    return agent


# --- account management (the admin pages and the password page) -----------------------------

def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"password: at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise Invalid("password: at most 1024 characters")


async def list_agents(session: AsyncSession) -> list[Agent]:
    rows = await session.scalars(select(Agent).order_by(Agent.active.desc(), Agent.username))
    return list(rows.all())


async def agent_by_id(session: AsyncSession, agent_id: int) -> Agent:
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"no account {agent_id}")
    return agent


async def create_agent(
    session: AsyncSession,
    hasher: PasswordHasher,
    *,
    username: str,
    role: str,
    password: str,
    now: datetime,
    display_name: str | None = None,
    language: str = "en",
) -> Agent:
    """A new account; unlike upsert_agent (the CLI's), an existing name is refused."""
    if await get_agent(session, username.strip()) is not None:
        raise Conflict(f"an account named {username.strip()!r} exists already")
    if language not in LANGUAGES:
        raise Invalid(f"language must be one of {', '.join(LANGUAGES)}")
    check_password_rules(password)
    return await upsert_agent(
        session, hasher, username=username, role=role, password=password, now=now,
        display_name=(display_name or "").strip()[:200] or None, language=language,
    )


async def bump_session_epoch(session: AsyncSession, agent_id: int) -> None:
    """Every desk session of this agent ends now (the cookies carry the old epoch)."""
    await session.execute(
        update(Agent).where(Agent.id == agent_id)
        .values(session_epoch=Agent.session_epoch + 1)
        .execution_options(synchronize_session=False)
    )
    agent = await session.get(Agent, agent_id)
    if agent is not None:
        await session.refresh(agent, ["session_epoch"])


async def _other_active_admins(session: AsyncSession, agent_id: int) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(Agent).where(
                Agent.role == "admin", Agent.active.is_(True), Agent.id != agent_id
            )
        )
        or 0
    )


async def set_role(session: AsyncSession, agent_id: int, role: str) -> Agent:
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}")
    agent = await agent_by_id(session, agent_id)
    if agent.role == "admin" and role != "admin" and agent.active:
        if await _other_active_admins(session, agent_id) == 0:
            raise Conflict("the last active admin cannot lose the admin role")
    agent.role = role
    await session.flush()
    return agent


async def set_active(session: AsyncSession, agent_id: int, active: bool) -> Agent:
    agent = await agent_by_id(session, agent_id)
    if not active and agent.role == "admin" and agent.active:
        if await _other_active_admins(session, agent_id) == 0:
            raise Conflict("the last active admin cannot be deactivated")
    agent.active = active
    await session.flush()
    if not active:
        await bump_session_epoch(session, agent_id)
    return agent


async def set_password(
    session: AsyncSession, hasher: PasswordHasher, agent_id: int, password: str
) -> Agent:
    """A new password (an admin's reset or the agent's own change) ends every session."""
    check_password_rules(password)
    agent = await agent_by_id(session, agent_id)
    agent.password_hash = await asyncio.to_thread(hash_password, hasher, password)
    await session.flush()
    await bump_session_epoch(session, agent_id)
    return agent


async def set_language(session: AsyncSession, agent_id: int, language: str) -> Agent:
    if language not in LANGUAGES:
        raise Invalid(f"language must be one of {', '.join(LANGUAGES)}")
    agent = await agent_by_id(session, agent_id)
    agent.language = language
    await session.flush()
    return agent
