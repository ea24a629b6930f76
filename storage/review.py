"""The review queue of public mentions: what a person should look at first, and what they do with
it (open a ticket, reply in public, dismiss, assign).

Every action runs in the caller's transaction and changes the post with optimistic concurrency:
the UPDATE names the version it read, so of two people acting on one post at once the second
gets a Conflict instead of silently overwriting the first (callers may simply retry: the action
is then checked again against what the first one did).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    func,
    literal,
    literal_column,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage import outbox
from storage.db import Store
from storage.errors import Conflict, IllegalMove, Invalid, NotFound, StoreError
from storage.lifecycle import CHANNELS, PRIORITIES, format_number
from storage.models import Agent, SocialPost, TicketEvent
from storage.tickets import NewTicket, TicketRules, create_ticket, identity_for

POSTS = cast(Table, SocialPost.__table__)
AGENTS = cast(Table, Agent.__table__)

STATES: tuple[str, ...] = ("new", "flagged", "ticketed", "replied", "dismissed", "ignored")
# The order the queue shows states in when several are asked for: what needs a person first.
QUEUE_ORDER: tuple[str, ...] = ("flagged", "new", "ticketed", "replied", "dismissed", "ignored")
ACTIONS: tuple[str, ...] = ("ticket", "reply", "dismiss", "assign")

# The states each action may start from (CONTRACT §5 review states). A ticketed post stays
# ticketed when someone also answers it in public; nothing undoes a ticket.
MOVES: dict[str, frozenset[str]] = {
    "ticketed": frozenset({"new", "flagged", "ignored", "replied", "dismissed"}),
    "replied": frozenset({"new", "flagged", "ignored", "dismissed", "ticketed"}),
    "dismissed": frozenset({"new", "flagged", "ignored"}),
}
# Platforms a public reply can go out on (an imported post has nobody to send it).
REPLY_LIMITS: dict[str, int] = {"x": 280, "mastodon": 500}
INTENT_KINDS: dict[str, str] = {
    "suggestion": "suggestion",
    "praise": "praise",
    "check_status": "question",
    "request_human": "question",
}
MAX_MEMBERS = 100
MAX_BULK = 200
RETRIES = 3

# Posts that are review items: group leaders that are not direct messages. Spelled with
# literals exactly like the predicate of the partial index ix_social_posts_review, so both
# databases use it; coalesce(), not IS NULL, so SQLite cannot pick ix_social_posts_group
# for the term instead (after ANALYZE it did, and sorted every leader).
REVIEW_ITEM = and_(
    func.coalesce(POSTS.c.group_id, literal_column("0")) == literal_column("0"),
    POSTS.c.stream != literal_column("'dms'"),
)


@dataclass
class MentionFilter:
    states: list[str] = field(default_factory=list)  # empty: every state
    platforms: list[str] = field(default_factory=list)
    priorities: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None
    assignee_id: int | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """One stretch of the queue read in index order: a state and a priority, with or without a
    known follower count (databases sort NULLs differently, so unknown reach is its own part)."""

    state: str
    priority: str | None
    has_followers: bool


@dataclass
class MentionRow:
    """`post` carries the social_posts columns as attributes; `assignee` is a username."""

    post: Any
    assignee: str | None


@dataclass
class MentionDetail:
    post: Any
    assignee: str | None
    members: list[Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One post of a bulk action."""

    id: int
    ok: bool
    ticket: str | None = None
    code: str | None = None
    message: str | None = None


# --- the queue -----------------------------------------------------------------------------


def segments(f: MentionFilter) -> list[Segment]:
    states = [s for s in QUEUE_ORDER if not f.states or s in f.states]
    priorities: list[str | None] = (
        [p for p in PRIORITIES if p in f.priorities] if f.priorities else [*PRIORITIES, None]
    )
    return [
        Segment(s, p, known) for s in states for p in priorities for known in (True, False)
    ]


def encode_cursor(post: Any) -> str:
    raw = json.dumps(
        [post.state, post.priority, post.author_followers, post.posted_at.isoformat(), post.id]
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Segment, int | None, datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        state, priority, followers, posted_at, post_id = json.loads(
            base64.urlsafe_b64decode(padded)
        )
        if state not in STATES or (priority is not None and priority not in PRIORITIES):
            raise ValueError("unknown state or priority")
        if followers is not None:
            followers = int(followers)
        at = datetime.fromisoformat(posted_at)
        if at.tzinfo is None:
            raise ValueError("naive time")
        return Segment(state, priority, followers is not None), followers, at, int(post_id)
    except (ValueError, TypeError) as exc:
        raise Invalid("cursor: not a cursor this API gave out") from exc


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a queue statement's SQL depends on; the values travel as parameters."""

    parts: tuple[Segment, ...]
    after: bool
    platforms: bool
    categories: bool
    languages: bool
    since: bool
    until: bool
    assignee: bool
    limit: int


def _filtered(query: Any, shape: _Shape) -> Any:
    if shape.platforms:
        query = query.where(POSTS.c.platform.in_(bindparam("platforms", expanding=True)))
    if shape.categories:
        query = query.where(POSTS.c.category.in_(bindparam("categories", expanding=True)))
    if shape.languages:
        query = query.where(POSTS.c.language.in_(bindparam("languages", expanding=True)))
    if shape.since:
        query = query.where(POSTS.c.posted_at >= bindparam("since", type_=POSTS.c.posted_at.type))
    if shape.until:
        query = query.where(POSTS.c.posted_at < bindparam("until", type_=POSTS.c.posted_at.type))
    if shape.assignee:
        query = query.where(POSTS.c.assignee_id == bindparam("assignee_id"))
    return query


def _segment_keys(rank: int, seg: Segment, shape: _Shape, after: bool) -> Any:
    """Ids of one segment, most reach then newest first: a backward walk of the index."""
    followers, posted_at, post_id = POSTS.c.author_followers, POSTS.c.posted_at, POSTS.c.id
    query = select(post_id, followers, posted_at, literal(rank).label("rank")).where(
        REVIEW_ITEM,
        POSTS.c.state == seg.state,
        POSTS.c.priority == seg.priority if seg.priority else POSTS.c.priority.is_(None),
        followers.is_not(None) if seg.has_followers else followers.is_(None),
    )
    query = _filtered(query, shape)
    if after:
        last_at = bindparam("after_at", type_=posted_at.type)
        if seg.has_followers:
            query = query.where(
                tuple_(followers, posted_at, post_id)
                < tuple_(bindparam("after_followers"), last_at, bindparam("after_id"))
            )
        else:
            query = query.where(tuple_(posted_at, post_id) < tuple_(last_at, bindparam("after_id")))
    return query.order_by(followers.desc(), posted_at.desc(), post_id.desc()).limit(shape.limit)


@lru_cache(maxsize=512)
def _queue_statement(shape: _Shape) -> Any:
    """Built once per shape: a union of up to 60 small reads costs milliseconds of Python to
    assemble, far more than the database takes to run it."""
    reads = [
        select(_segment_keys(rank, seg, shape, shape.after and rank == 0).subquery())
        for rank, seg in enumerate(shape.parts)
    ]
    keys = (union_all(*reads) if len(reads) > 1 else reads[0]).subquery()
    return (
        select(POSTS, AGENTS.c.username.label("assignee_name"))
        .join(keys, keys.c.id == POSTS.c.id)
        .outerjoin(AGENTS, AGENTS.c.id == POSTS.c.assignee_id)
        .order_by(
            keys.c.rank, keys.c.author_followers.desc(), keys.c.posted_at.desc(), keys.c.id.desc()
        )
        .limit(shape.limit)
    )


async def list_mentions(
    session: AsyncSession, f: MentionFilter, *, limit: int, cursor: str | None
) -> tuple[list[MentionRow], str | None]:
    """Review items, flagged first, then by priority, reach (followers) and time, newest first.

    Each (state, priority) stretch is read on its own in index order and the stretches are
    merged, so a page costs a few short index reads however many posts there are."""
    parts = segments(f)
    params: dict[str, Any] = {}
    start = 0
    if cursor:
        seg, followers, at, post_id = decode_cursor(cursor)
        if seg not in parts:
            raise Invalid("cursor: it belongs to other filters; start from the first page")
        start = parts.index(seg)
        params |= {"after_at": at, "after_id": post_id}
        if followers is not None:
            params["after_followers"] = followers
    shape = _Shape(
        parts=tuple(parts[start:]),
        after=cursor is not None,
        platforms=bool(f.platforms),
        categories=bool(f.categories),
        languages=bool(f.languages),
        since=f.since is not None,
        until=f.until is not None,
        assignee=f.assignee_id is not None,
        limit=limit + 1,
    )
    if not shape.parts:
        return [], None
    params |= {
        "platforms": f.platforms, "categories": f.categories, "languages": f.languages,
        "since": f.since, "until": f.until, "assignee_id": f.assignee_id,
    }
    used = {k: v for k, v in params.items() if v is not None and v != []}
    result = await session.execute(_queue_statement(shape), used)
    rows = [MentionRow(r, r.assignee_name) for r in result.all()]
    next_cursor = encode_cursor(rows[limit - 1].post) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def mention_detail(session: AsyncSession, post_id: int) -> MentionDetail:
    row = (
        await session.execute(
            select(POSTS, AGENTS.c.username.label("assignee_name"))
            .outerjoin(AGENTS, AGENTS.c.id == POSTS.c.assignee_id)
            .where(POSTS.c.id == post_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"no mention {post_id}")
    members = list(
        (
            await session.execute(
                select(POSTS)
                .where(POSTS.c.group_id == post_id)
                .order_by(POSTS.c.posted_at, POSTS.c.id)
                .limit(MAX_MEMBERS)
            )
        ).all()
    )
    return MentionDetail(row, row.assignee_name, members)


# --- the actions ---------------------------------------------------------------------------


def actor_of(agent: Agent) -> str:
    return f"agent:{agent.username}"


async def _load(session: AsyncSession, post_id: int, expected_version: int | None) -> Any:
    post = (await session.execute(select(POSTS).where(POSTS.c.id == post_id))).first()
    if post is None:
        raise NotFound(f"no mention {post_id}")
    if expected_version is not None and post.version != expected_version:
        raise Conflict("the mention changed since you loaded it; reload and try again")
    return post


def _check(post: Any, target: str, verb: str) -> None:
    if post.state not in MOVES[target]:
        raise IllegalMove(f"a {post.state} mention cannot be {verb}")


async def _change(session: AsyncSession, post: Any, **values: Any) -> None:
    """Writes `values` only if nobody changed the post since it was read."""
    result = await session.execute(
        update(POSTS)
        .where(POSTS.c.id == post.id, POSTS.c.version == post.version)
        .values(**values, version=post.version + 1)
    )
    if cast(Any, result).rowcount != 1:
        raise Conflict("the mention changed meanwhile; reload and try again")


async def _change_group(session: AsyncSession, leader_id: int, target: str, **values: Any) -> None:
    """Near-duplicates go with their leader (a viral complaint is one review item)."""
    await session.execute(
        update(POSTS)
        .where(POSTS.c.group_id == leader_id, POSTS.c.state.in_(sorted(MOVES[target])))
        .values(state=target, version=POSTS.c.version + 1, **values)
    )


def ticket_kind(intent: str | None) -> str:
    return INTENT_KINDS.get(intent or "", "complaint")


def customer_key(post: Any) -> str:
    """The author's id on the platform: the same customer as their direct messages."""
    if post.author_id:
        return str(post.author_id)
    if post.author_username:
        return "@" + str(post.author_username).lstrip("@")
    return f"post:{post.external_id}"


async def ticket_mention(
    session: AsyncSession,
    rules: TicketRules,
    post_id: int,
    *,
    agent: Agent | None = None,
    rule: str | None = None,
    expected_version: int | None = None,
) -> int:
    """Opens a ticket for the post (and its near-duplicates); returns the ticket id. Done by
    a person (`agent`) or by an auto-ticket rule (`rule`, recorded as `rule:NAME`), which only
    takes posts nobody decided on yet (new or flagged)."""
    post = await _load(session, post_id, expected_version)
    _check(post, "ticketed", "ticketed")
    if rule is not None and post.state not in ("new", "flagged"):
        raise IllegalMove(f"a {post.state} mention is left to the people who decided on it")
    if post.platform not in CHANNELS:
        raise Invalid(f"mentions from {post.platform!r} cannot become tickets")
    now = rules.clock()
    if agent is not None:
        actor = actor_of(agent)
    elif rule is not None:
        actor = f"rule:{rule}"
    else:
        raise ValueError("ticket_mention needs an agent or a rule")
    # First the conditional write: a second person acting at once stops here, before any ticket.
    await _change(session, post, state="ticketed", handled_by=actor, handled_at=now)
    identity = await identity_for(
        session,
        channel=post.platform,
        external_id=customer_key(post),
        display_name=post.author_name or post.author_username,
        language=post.language,
        now=now,
    )
    kind = ticket_kind(post.intent)
    description = (post.text or "").strip() or f"(a post without text: {post.url or post.id})"
    try:
        ticket = await create_ticket(
            session,
            rules,
            NewTicket(
                kind=kind,
                channel=post.platform,
                description=description,
                customer_id=identity.customer_id,
                identity_id=identity.id,
                category=post.category if kind == "complaint" else None,
                priority=post.priority if post.priority in PRIORITIES else None,
                language=post.language,
                actor=actor,
                # One post can never open two tickets, whatever races.
                intake_key=f"mention:{post.id}",
            ),
        )
    except IntegrityError as exc:
        raise Conflict("a ticket for this mention is being opened already") from exc
    session.add(
        TicketEvent(
            ticket_id=ticket.id,
            at=now,
            type="source",
            actor=actor,
            note=f"opened from the {post.platform} post {post.url or post.external_id}",
            data={
                "post_id": post.id,
                "platform": post.platform,
                "external_id": post.external_id,
                "url": post.url,
                "group_size": post.group_size,
            },
        )
    )
    await session.execute(
        update(POSTS).where(POSTS.c.id == post.id).values(ticket_id=ticket.id)
    )
    await _change_group(
        session, post.id, "ticketed", ticket_id=ticket.id, handled_by=actor, handled_at=now
    )
    await session.flush()
    return ticket.id


AUTO_TICKET_RULE = "auto_ticket"


async def auto_ticket(
    store: Store, rules: TicketRules, priorities: Sequence[str], *,
    within: timedelta = timedelta(days=1), limit: int = 50,
) -> list[int]:
    """The auto-ticket rule: every flagged review item of `priorities` (safety and legal
    threats, P1, by default) fetched within `within` that nobody decided on gets a ticket, so
    its SLA clock starts without waiting for a person. Each in its own transaction; a person
    (or another process) acting first wins. Returns the tickets opened."""
    if not priorities:
        return []
    since = rules.clock() - within
    async with store.read() as session:
        ids = list((await session.scalars(
            select(POSTS.c.id)
            .where(REVIEW_ITEM, POSTS.c.state == "flagged",
                   POSTS.c.priority.in_(list(priorities)), POSTS.c.handled_by.is_(None),
                   # Live platforms only: an import's posts are history, not news.
                   POSTS.c.platform.in_(sorted(REPLY_LIMITS)), POSTS.c.fetched_at >= since)
            .order_by(POSTS.c.id)
            .limit(limit)
        )).all())
    opened: list[int] = []
    for post_id in ids:
        try:
            async with store.transaction() as session:
                opened.append(await ticket_mention(session, rules, post_id,
                                                   rule=AUTO_TICKET_RULE))
        except (IllegalMove, Conflict, Invalid):
            continue  # decided meanwhile, or not a channel a ticket can answer on
    return opened


async def dismiss_mention(
    session: AsyncSession,
    rules: TicketRules,
    post_id: int,
    *,
    agent: Agent,
    expected_version: int | None = None,
) -> None:
    post = await _load(session, post_id, expected_version)
    _check(post, "dismissed", "dismissed")
    now, actor = rules.clock(), actor_of(agent)
    await _change(session, post, state="dismissed", handled_by=actor, handled_at=now)
    await _change_group(session, post.id, "dismissed", handled_by=actor, handled_at=now)


def reply_length(platform: str, text: str) -> int:
    """Characters as the platform counts them: X weighs CJK and most other scripts double."""
    if platform != "x":
        return len(text)
    light = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
    return sum(1 if any(lo <= ord(c) <= hi for lo, hi in light) else 2 for c in text)


async def reply_mention(
    session: AsyncSession,
    rules: TicketRules,
    post_id: int,
    text: str,
    *,
    agent: Agent,
    expected_version: int | None = None,
) -> None:
    """A public reply in the post's thread, written to the outbox for the platform's sender.
    Only ever called for a person who pressed send; one reply per post (key `reply:{id}`)."""
    text = text.strip()
    if not text:
        raise Invalid("text is empty")
    post = await _load(session, post_id, expected_version)
    limit = REPLY_LIMITS.get(post.platform)
    if limit is None:
        raise Invalid(f"mentions from {post.platform!r} cannot be answered from the desk")
    if reply_length(post.platform, text) > limit:
        raise Invalid(f"text: longer than the {limit} characters {post.platform} allows")
    if post.reply_text is not None:
        raise IllegalMove("this mention was answered already")
    _check(post, "replied", "answered")
    now, actor = rules.clock(), actor_of(agent)
    # A ticketed post keeps its stronger state; the reply is still recorded and sent.
    state = "ticketed" if post.state == "ticketed" else "replied"
    await _change(
        session, post, state=state, reply_text=text, handled_by=actor, handled_at=now
    )
    outbox.enqueue(
        session,
        key=f"reply:{post.id}",
        channel=post.platform,
        identity_id=None,
        ticket_id=post.ticket_id,
        kind=outbox.PUBLIC_REPLY,
        payload={
            "post_id": post.id,
            "in_reply_to": post.external_id,
            "text": text,
            "platform": post.platform,
        },
        now=now,
    )
    try:
        await session.flush()
    except IntegrityError as exc:
        raise IllegalMove("this mention was answered already") from exc


async def assign_mention(
    session: AsyncSession,
    rules: TicketRules,
    post_id: int,
    username: str | None,
    *,
    agent: Agent,
    expected_version: int | None = None,
) -> None:
    post = await _load(session, post_id, expected_version)
    assignee_id: int | None = None
    if username is not None:
        found = (
            await session.execute(
                select(AGENTS.c.id, AGENTS.c.active).where(AGENTS.c.username == username)
            )
        ).first()
        if found is None or not found.active:
            raise Invalid(f"agent: no active agent named {username!r}")
        assignee_id = found.id
    await _change(session, post, assignee_id=assignee_id)


# --- running actions -----------------------------------------------------------------------

Action = Callable[[AsyncSession], Awaitable[Any]]


async def run(store: Store, action: Action, *, retry: bool = True) -> Any:
    """One action in its own transaction. Without a version from the client, a Conflict (someone
    else changed the post in between) is retried: the action is re-checked on the new state, so
    a legal action still happens and an illegal one gets its 409."""
    attempts = RETRIES if retry else 1
    for attempt in range(attempts):
        try:
            async with store.transaction() as session:
                return await action(session)
        except Conflict:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


async def bulk(
    store: Store,
    rules: TicketRules,
    ids: Sequence[int],
    action: str,
    *,
    agent: Agent,
    text: str | None = None,
    assignee: str | None = None,
) -> list[Outcome]:
    """The same action on many posts, each in its own transaction: one post already handled
    does not stop the others, and each outcome says what happened."""
    if action not in ACTIONS:
        raise Invalid(f"action: one of {', '.join(ACTIONS)}")
    if not 1 <= len(ids) <= MAX_BULK:
        raise Invalid(f"ids: 1 to {MAX_BULK} mentions")
    if action == "reply" and not (text or "").strip():
        raise Invalid("text is empty")
    outcomes: list[Outcome] = []
    for post_id in dict.fromkeys(ids):  # each post once, in the order given

        def one(session: AsyncSession, post_id: int = post_id) -> Awaitable[Any]:
            if action == "ticket":
                return ticket_mention(session, rules, post_id, agent=agent)
            if action == "dismiss":
                return dismiss_mention(session, rules, post_id, agent=agent)
            if action == "reply":
                return reply_mention(session, rules, post_id, text or "", agent=agent)
            return assign_mention(session, rules, post_id, assignee, agent=agent)

        try:
            result = await run(store, one)
        except StoreError as exc:
            outcomes.append(Outcome(post_id, False, code=exc.code, message=str(exc)))
            continue
        ticket = format_number(result) if action == "ticket" else None
        outcomes.append(Outcome(post_id, True, ticket=ticket))
    return outcomes
