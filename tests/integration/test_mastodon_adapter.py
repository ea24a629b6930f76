"""The Mastodon adapter: the real Mastodon.py talking HTTP to the fake Mastodon server."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from monitors.mastodon import (
    MastodonAdapter,
    MastodonApi,
    make_client,
    make_mastodon_adapter,
    plain_text,
    split_text,
)
from monitors.poll import READ, Monitor, PollPolicy
from monitors.triage import Triage, TriageRules
from monitors.types import DIRECT, MENTIONS, CursorRejected, Paused, RateLimited, Unavailable
from nlu.embedded import EmbeddedInterpreter
from storage.clock import ManualClock
from storage.db import Store
from storage.mentions import Grouping
from storage.models import MonitorCursor, SocialPost
from tests.fakes.mastodon_api import TOKEN, FakeMastodon

START = datetime(2026, 1, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
async def server() -> AsyncIterator[FakeMastodon]:
    fake = FakeMastodon()
    await fake.start()
    yield fake
    await fake.stop()


def adapter_for(server: FakeMastodon, **kw: int) -> MastodonAdapter:
    return MastodonAdapter(MastodonApi(make_client(server.base_url, TOKEN, timeout=5)), **kw)


@pytest.fixture
async def adapter(server: FakeMastodon) -> AsyncIterator[MastodonAdapter]:
    a = adapter_for(server)
    yield a
    await a.close()


async def drain(adapter: MastodonAdapter, stream: str, cursor: str | None) -> tuple[
    list[str], str | None
]:
    """Reads like the poll loop does: page after page while the adapter says there is more."""
    texts: list[str] = []
    for _ in range(50):
        page = await adapter.read(stream, cursor)
        texts += [p.text for p in page.posts]
        cursor = page.cursor
        if not page.more:
            break
    return texts, cursor


async def test_constructing_the_adapter_calls_nobody(server: FakeMastodon) -> None:
    class Settings:
        mastodon_base_url = server.base_url
        mastodon_token = __import__("pydantic").SecretStr(TOKEN)

    a = make_mastodon_adapter(Settings())
    assert server.requests == []
    me = await a.whoami()
    assert (me.id, me.username) == (server.me["id"], "shop")
    assert [r.path for r in server.requests] == ["/api/v1/accounts/verify_credentials"]
    await a.close()


async def test_first_read_returns_mentions_oldest_first_with_authors(
    server: FakeMastodon, adapter: MastodonAdapter
) -> None:
    big = server.account("bigvoice", domain="other.social", display_name="Big Voice",
                         followers=250_000)
    quiet = server.account("quiet", followers=None)
    server.mention(big, "My order 123-4567 arrived broken!")
    server.notify("favourite", big)
    server.notify("follow", quiet)
    server.mention(quiet, "Love the new store")
    server.dm(quiet, "hello, I need help")

    page = await adapter.read(MENTIONS, None)

    assert [(p.stream, p.text) for p in page.posts] == [
        (MENTIONS, "@shop My order 123-4567 arrived broken!"),
        (MENTIONS, "@shop Love the new store"),
        (DIRECT, "hello, I need help"),
    ]
    first = page.posts[0]
    assert first.author.username == "bigvoice@other.social"
    assert first.author.followers == 250_000
    assert first.author.name == "Big Voice"
    assert page.posts[1].author.followers is None  # no metrics: unknown, not zero
    assert first.posted_at.tzinfo is not None and first.url and first.platform == "mastodon"
    # The cursor is the newest mention notification read, the direct message's included.
    assert page.cursor == server.notification_ids("mention")[-1]
    # Only mentions were asked for: favourites and follows never reach us.
    [request] = server.calls("GET", "/api/v1/notifications")
    assert request.query["types[]"] == ["mention"]
    assert request.headers["User-Agent"] == "careloop"  # the client's identity, as Mastodon.py's


async def test_one_read_serves_mentions_and_direct_messages(
    server: FakeMastodon, adapter: MastodonAdapter
) -> None:
    mei = server.account("mei", display_name="Mei")
    public = server.mention(mei, "public words")
    dm = server.dm(mei, "my parcel is late")

    assert list(adapter.streams()) == [MENTIONS]  # the poll loop reads one stream, once
    page = await adapter.read(MENTIONS, None)

    assert [(p.stream, p.external_id) for p in page.posts] == [
        (MENTIONS, public["id"]), (DIRECT, dm["id"]),
    ]
    direct = page.posts[1]
    assert direct.text == "my parcel is late"  # our own @handle is not what they said
    assert direct.conversation == dm["id"]
    assert page.posts[0].conversation is None
    assert len(server.calls("GET", "/api/v1/notifications")) == 1

    # A caller that wants the direct messages alone still gets them.
    dms = await adapter.read(DIRECT, None)
    assert [p.external_id for p in dms.posts] == [dm["id"]] and dms.cursor == page.cursor


async def test_a_first_read_that_finds_nothing_still_keeps_a_cursor(
    server: FakeMastodon,
) -> None:
    adapter = adapter_for(server, page_size=2, backfill=4)
    fan = server.account("fan")
    empty = await adapter.read(MENTIONS, None)
    # No notification at all: read everything that comes, from the start.
    assert (empty.posts, empty.cursor, empty.more) == ([], "0", False)

    server.notify("follow", fan)
    server.notify("favourite", fan)
    only_others = await adapter.read(MENTIONS, None)
    # Other notifications only: the newest of them, so mentions after it are all new.
    assert only_others.posts == []
    assert only_others.cursor == server.notification_ids("favourite")[-1]

    # A burst bigger than the first read's backfill (4) is read in full from that cursor.
    for i in range(9):
        server.mention(fan, f"burst {i}")
    texts, cursor = await drain(adapter, MENTIONS, only_others.cursor)
    assert texts == [f"@shop burst {i}" for i in range(9)]
    assert cursor == server.notification_ids("mention")[-1]
    await adapter.close()


async def test_reading_from_a_cursor_pages_forward_without_gaps_or_repeats(
    server: FakeMastodon,
) -> None:
    adapter = adapter_for(server, page_size=2)
    fan = server.account("fan")
    server.mention(fan, "before the cursor")
    _, cursor = await drain(adapter, MENTIONS, None)
    for i in range(5):
        server.mention(fan, f"new {i}")

    page = await adapter.read(MENTIONS, cursor)
    assert [p.text for p in page.posts] == ["@shop new 0", "@shop new 1"] and page.more
    rest, cursor = await drain(adapter, MENTIONS, page.cursor)
    assert rest == ["@shop new 2", "@shop new 3", "@shop new 4"]

    server.mention(fan, "later")
    again, _ = await drain(adapter, MENTIONS, cursor)
    assert again == ["@shop later"]
    assert all("min_id" in r.query for r in server.calls("GET", "/api/v1/notifications")[1:])
    await adapter.close()


async def test_first_read_stops_at_the_backfill(server: FakeMastodon) -> None:
    adapter = adapter_for(server, page_size=2, backfill=4)
    fan = server.account("fan")
    for i in range(7):
        server.mention(fan, f"m{i}")
    page = await adapter.read(MENTIONS, None)
    assert [p.text for p in page.posts] == [f"@shop m{i}" for i in (3, 4, 5, 6)]
    assert not page.more
    await adapter.close()


async def test_html_becomes_plain_text_with_its_line_breaks(
    server: FakeMastodon, adapter: MastodonAdapter
) -> None:
    fan = server.account("fan")
    server.mention(fan, "", html_content=(
        '<p><span class="h-card"><a href="x" class="u-url mention">@<span>shop</span></a>'
        "</span> first line<br>second &amp; &lt;b&gt;</p><p>next paragraph"
        "<script>alert(1)</script></p>"
    ))
    server.mention(fan, "", media=("image",), html_content="")
    posts = (await adapter.read(MENTIONS, None)).posts
    assert posts[0].text == "@shop first line\nsecond & <b>\n\nnext paragraph"
    assert posts[1].text == "[image]"  # a post with only a picture still says so


def test_plain_text_and_splitting() -> None:
    assert plain_text("<p>a</p><p>b<br />c</p>") == "a\n\nb\nc"
    assert plain_text(None) == ""
    parts = split_text("word " * 300, 100)
    assert all(len(p) <= 100 for p in parts) and " ".join(parts).split() == ["word"] * 300


async def test_rate_limit_waits_until_the_reset_even_with_a_skewed_server_clock(
    server: FakeMastodon, adapter: MastodonAdapter
) -> None:
    server.clock_skew = timedelta(hours=2)  # the server's clock is two hours ahead of ours
    server.fail("/api/v1/notifications", 429, reset_in=120)
    before = datetime.now(UTC)
    with pytest.raises(RateLimited) as caught:
        await adapter.read(MENTIONS, "1")
    # The reset is 2 minutes after the server's "now": read on our clock, about 2 minutes.
    assert before + timedelta(seconds=60) < caught.value.until < before + timedelta(seconds=180)


async def test_a_broken_reset_header_is_capped(
    server: FakeMastodon, adapter: MastodonAdapter
) -> None:
    server.fail("/api/v1/notifications", 429, reset_in=86_400 * 30)
    with pytest.raises(RateLimited) as caught:
        await adapter.read(MENTIONS, "1")
    assert caught.value.until < datetime.now(UTC) + timedelta(minutes=16)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_unavailable(
    server: FakeMastodon, adapter: MastodonAdapter, status: int
) -> None:
    server.fail("/api/v1/notifications", status)
    with pytest.raises(Unavailable):
        await adapter.read(MENTIONS, "1")
    assert (await adapter.read(MENTIONS, "1")).posts == []  # and then it works again


async def test_malformed_json_is_unavailable(
    server: FakeMastodon, adapter: MastodonAdapter
) -> None:
    server.fail("/api/v1/notifications", 200, malformed=True)
    with pytest.raises(Unavailable):
        await adapter.read(MENTIONS, None)


async def test_a_revoked_token_pauses_the_stream(
    server: FakeMastodon, adapter: MastodonAdapter
) -> None:
    server.revoke()
    with pytest.raises(Paused):
        await adapter.read(DIRECT, "1")
    with pytest.raises(Paused):
        await adapter.whoami()


async def test_a_rejected_cursor_is_reported(
    server: FakeMastodon, adapter: MastodonAdapter
) -> None:
    with pytest.raises(CursorRejected):
        await adapter.read(MENTIONS, "not-a-mastodon-id")


async def test_a_server_that_is_down_is_unavailable(server: FakeMastodon) -> None:
    adapter = adapter_for(server)
    await server.stop()
    with pytest.raises(Unavailable):
        await adapter.read(MENTIONS, "1")
    await adapter.close()


# --- through the poll loop and the store ---------------------------------------------------

@pytest.fixture(scope="module")
def interpreter() -> EmbeddedInterpreter:
    return EmbeddedInterpreter(preload=True)


def poller(store: Store, adapter: MastodonAdapter, interpreter: EmbeddedInterpreter,
           max_pages: int = 10) -> Monitor:
    return Monitor(
        store=store, adapter=adapter, triage=Triage(interpreter, TriageRules()),
        grouping=Grouping(), policy=PollPolicy(poll_seconds=60.0, max_pages=max_pages),
        owner="proc-a", clock=ManualClock(START), rng=random.Random(7),
    )


async def cursors(store: Store) -> dict[str, str | None]:
    async with store.read() as session:
        rows = (await session.scalars(select(MonitorCursor))).all()
    return {r.stream: r.cursor for r in rows}


async def posts(store: Store) -> list[tuple[str, str, str]]:
    async with store.read() as session:
        rows = await session.execute(
            select(SocialPost.stream, SocialPost.external_id, SocialPost.state)
            .order_by(SocialPost.id)
        )
    return [(r[0], r[1], r[2]) for r in rows.all()]


async def test_the_poll_loop_stores_mentions_and_direct_messages_with_one_cursor(
    server: FakeMastodon, store: Store, interpreter: EmbeddedInterpreter
) -> None:
    adapter = adapter_for(server)
    mei = server.account("mei")
    complaint = server.mention(mei, "my parcel arrived broken, I want a refund")
    dm = server.dm(mei, "where is my order 1234?")
    praise = server.mention(mei, "thanks for the lovely flowers")
    seen: list[tuple[int, dict[str, str | None], list[tuple[str, str, str]]]] = []

    async def on_direct_messages(ids: Sequence[int]) -> None:
        # Runs after the page's transaction: the direct message and the cursor are stored.
        seen.append((len(ids), await cursors(store), await posts(store)))

    m = poller(store, adapter, interpreter)
    m.on_direct_messages = on_direct_messages
    assert await m.poll_all() == {MENTIONS: READ}

    stored = await posts(store)
    assert [(stream, ext) for stream, ext, _ in stored] == [
        (MENTIONS, complaint["id"]), (DIRECT, dm["id"]), (MENTIONS, praise["id"]),
    ]
    assert stored[1][2] == "new"  # for the dialogue; the mentions are triaged
    newest = server.notification_ids("mention")[-1]
    assert await cursors(store) == {MENTIONS: newest}  # one stream, one cursor
    [(count, cursor_then, posts_then)] = seen
    assert count == 1 and cursor_then == {MENTIONS: newest}
    assert (DIRECT, dm["id"], "new") in posts_then
    # Each notification was fetched once: one first-read request, none for a `dms` stream.
    assert len(server.calls("GET", "/api/v1/notifications")) == 1

    later = server.dm(mei, "hello again")
    await m.poll_all()
    assert [n for n, _, _ in seen] == [1, 1]
    assert (await posts(store))[-1] == (DIRECT, later["id"], "new")
    await adapter.close()


async def test_an_empty_first_poll_then_a_burst_bigger_than_the_backfill_is_read_in_full(
    server: FakeMastodon, store: Store, interpreter: EmbeddedInterpreter
) -> None:
    adapter = adapter_for(server, page_size=3, backfill=6)
    fan = server.account("fan")
    server.notify("follow", fan)
    m = poller(store, adapter, interpreter, max_pages=20)
    assert await m.poll_all() == {MENTIONS: READ}
    assert await posts(store) == []
    assert await cursors(store) == {MENTIONS: server.notification_ids("follow")[-1]}

    burst = [server.mention(fan, f"order {i} is late")["id"] for i in range(14)]
    await m.poll_all()
    # Not just the newest 6 a first start reads: all 14, paged forward from the cursor.
    assert [ext for _, ext, _ in await posts(store)] == burst
    assert await cursors(store) == {MENTIONS: server.notification_ids("mention")[-1]}
    requests = server.calls("GET", "/api/v1/notifications")
    assert all("max_id" not in r.query for r in requests[2:])
    await adapter.close()
