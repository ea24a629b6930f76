"""The X adapter (monitors/x.py) on the real tweepy AsyncClient, against the fake X API v2 at
the wire (tests/fakes/x_api.py). Nothing of tweepy is mocked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from pydantic import SecretStr

from monitors.types import (
    DIRECT,
    MENTIONS,
    SEARCH,
    CursorRejected,
    Paused,
    Post,
    RateLimited,
    Unavailable,
)
from monitors.x import Cursor, Refused, XAdapter, make_x_adapter
from tests.fakes.x_api import FakeX, running_fake


@pytest.fixture
async def fake() -> AsyncIterator[FakeX]:
    async with running_fake() as server:
        yield server


def settings_for(
    fake: FakeX, *, keywords: str | None = None, bearer: bool = False
) -> SimpleNamespace:
    c = fake.credentials
    return SimpleNamespace(
        x_bearer_token=SecretStr(c.bearer_token) if bearer else None,
        x_consumer_key=SecretStr(c.consumer_key),
        x_consumer_secret=SecretStr(c.consumer_secret),
        x_access_token=SecretStr(c.access_token),
        x_access_token_secret=SecretStr(c.access_token_secret),
        x_api_base=fake.api_base,
        x_keywords=keywords,
    )


@pytest.fixture
async def adapter(fake: FakeX) -> AsyncIterator[XAdapter]:
    x = make_x_adapter(settings_for(fake, keywords="acme, acme support"))
    yield x
    await x.close()


async def read_all(
    adapter: XAdapter, stream: str, cursor: str | None
) -> tuple[list[Post], str | None, int]:
    """What the poll loop does: pages until `more` is False (each page stored with its cursor)."""
    posts: list[Post] = []
    reads = 0
    while True:
        page = await adapter.read(stream, cursor)
        posts.extend(page.posts)
        reads += page.reads
        cursor = page.cursor
        if not page.more:
            return posts, cursor, reads


async def test_whoami_is_the_account_of_the_access_token(
        fake: FakeX, adapter: XAdapter) -> None:
    me = await adapter.whoami()
    assert (me.id, me.username, me.followers) == (fake.me.id, "CareloopShop", 5200)
    assert adapter.streams() == [MENTIONS, DIRECT, SEARCH]


async def test_mentions_oldest_first_with_authors_and_since_id(
        fake: FakeX, adapter: XAdapter) -> None:
    anna = fake.add_user("anna", "Anna", followers=120_000)
    ben = fake.add_user("ben", followers=None)  # X sends no public_metrics for him
    first = fake.mention(anna, "my order 123-4567 never arrived")
    second = fake.mention(ben, "charged twice!", reply_to=first)

    page = await adapter.read(MENTIONS, None)
    assert [p.external_id for p in page.posts] == [first.id, second.id]
    assert page.cursor == second.id and not page.more and page.reads == 2
    by_anna, by_ben = page.posts
    assert by_anna.author.username == "anna" and by_anna.author.followers == 120_000
    assert by_ben.author.followers is None
    assert by_ben.in_reply_to == first.id and by_ben.conversation == first.id
    assert by_anna.text.endswith("never arrived")
    assert by_anna.url == f"https://x.com/anna/status/{first.id}"
    assert by_anna.posted_at.tzinfo is not None

    third = fake.mention(anna, "still waiting")
    page = await adapter.read(MENTIONS, page.cursor)
    assert [p.external_id for p in page.posts] == [third.id]
    assert fake.requests_to("mentions")[-1].query["since_id"] == second.id
    page = await adapter.read(MENTIONS, page.cursor)
    assert page.posts == [] and page.cursor == third.id and page.reads == 0


async def test_pagination_stores_a_cursor_per_page_and_loses_nothing(
        fake: FakeX, adapter: XAdapter) -> None:
    customer = fake.add_user("carol")
    old = [fake.mention(customer, f"old {i}") for i in range(3)]
    _, cursor, _ = await read_all(adapter, MENTIONS, None)
    assert cursor == old[-1].id
    burst = [fake.mention(customer, f"burst {i}") for i in range(250)]

    page1 = await adapter.read(MENTIONS, cursor)
    assert page1.more and len(page1.posts) == 100 and page1.cursor is not None
    assert Cursor.parse(page1.cursor).token is not None
    # The newest 100 first (oldest first within the page)...
    assert [p.external_id for p in page1.posts] == [t.id for t in burst[150:]]
    # ...a crash here resumes at the stored cursor: the next page, not the first again.
    rest, final, reads = await read_all(adapter, MENTIONS, page1.cursor)
    got = {p.external_id for p in [*page1.posts, *rest]}
    assert got == {t.id for t in burst}
    assert final == burst[-1].id and reads == 150
    assert all(r.query.get("since_id") == old[-1].id for r in fake.requests_to("mentions")[-3:])


async def test_first_start_reads_the_800_newest(fake: FakeX, adapter: XAdapter) -> None:
    customer = fake.add_user("dora")
    tweets = [fake.mention(customer, f"hello {i}") for i in range(850)]
    posts, cursor, reads = await read_all(adapter, MENTIONS, None)
    assert len(posts) == 800 and reads == 800
    assert {p.external_id for p in posts} == {t.id for t in tweets[50:]}
    assert cursor == tweets[-1].id
    assert len(fake.requests_to("mentions")) == 8


async def test_media_only_deleted_and_suspended_authors_do_not_crash(
        fake: FakeX, adapter: XAdapter) -> None:
    gone = fake.add_user("gone", suspended=True)
    eve = fake.add_user("eve")
    media_only = fake.post(eve, "", mentions=[fake.me])
    deleted = fake.mention(eve, "oops")
    fake.delete(deleted)
    orphan = fake.mention(gone, "from a suspended account")
    page = await adapter.read(MENTIONS, None)
    ids = [p.external_id for p in page.posts]
    assert ids == [media_only.id, orphan.id]
    assert page.posts[0].text == ""
    # The author X could not expand (an `errors` entry in a 200) is known by id only.
    assert page.posts[1].author.id == gone.id and page.posts[1].author.username is None
    assert page.posts[1].url == f"https://x.com/i/web/status/{orphan.id}"


async def test_direct_messages_skip_our_own_and_stop_at_the_cursor(
        fake: FakeX, adapter: XAdapter) -> None:
    frank = fake.add_user("frank", followers=3)
    hello = fake.direct_message(frank, "hi, my parcel is late")
    fake.direct_message(fake.me, "Sorry to hear that! Your ticket is CL-1", to=frank)
    page = await adapter.read(DIRECT, None)
    assert [p.external_id for p in page.posts] == [hello.id]
    dm = page.posts[0]
    assert dm.stream == DIRECT and dm.author.username == "frank" and dm.author.followers == 3
    assert dm.conversation == hello.dm_conversation_id
    assert page.reads == 2 and not page.more
    query = fake.requests_to("dm_events")[-1].query
    assert query["event_types"] == "MessageCreate"

    again = fake.direct_message(frank, "yes")
    page = await adapter.read(DIRECT, page.cursor)
    assert [p.external_id for p in page.posts] == [again.id]


async def test_direct_messages_paginate_back_to_the_cursor(
        fake: FakeX, adapter: XAdapter) -> None:
    grace = fake.add_user("grace")
    fake.direct_message(grace, "first")
    _, cursor, _ = await read_all(adapter, DIRECT, None)
    later = [fake.direct_message(grace, f"msg {i}") for i in range(130)]
    posts, final, _ = await read_all(adapter, DIRECT, cursor)
    assert [p.external_id for p in posts[-30:]] == [e.id for e in later[:30]]
    assert {p.external_id for p in posts} == {e.id for e in later}
    assert final == later[-1].id


async def test_keyword_search_with_since_id(fake: FakeX, adapter: XAdapter) -> None:
    hal = fake.add_user("hal", followers=50)
    hit = fake.post(hal, "ACME support never answers")
    fake.post(hal, "nothing to see here")
    page = await adapter.read(SEARCH, None)
    assert [p.external_id for p in page.posts] == [hit.id]
    assert fake.requests_to("search")[-1].query["query"] == '(acme OR "acme support")'
    later = fake.post(hal, "acme again")
    page = await adapter.read(SEARCH, page.cursor)
    assert [p.external_id for p in page.posts] == [later.id]


async def test_search_with_app_only_bearer_token(fake: FakeX) -> None:
    x = make_x_adapter(settings_for(fake, keywords="acme", bearer=True))
    try:
        hit = fake.post(fake.add_user("ivy"), "acme rocks")
        page = await x.read(SEARCH, None)
        assert [p.external_id for p in page.posts] == [hit.id]
        assert fake.requests_to("search")[-1].auth == "bearer"
    finally:
        await x.close()


async def test_a_since_id_older_than_search_serves_is_a_rejected_cursor(
        fake: FakeX, adapter: XAdapter) -> None:
    old = fake.post(fake.add_user("jay"), "acme", at=datetime.now(UTC) - timedelta(days=8))
    with pytest.raises(CursorRejected):
        await adapter.read(SEARCH, old.id)


async def test_an_expired_pagination_token_is_a_rejected_cursor(
        fake: FakeX, adapter: XAdapter) -> None:
    kim = fake.add_user("kim")
    for i in range(120):
        fake.mention(kim, f"m {i}")
    page = await adapter.read(MENTIONS, None)
    fake.expire_tokens()
    with pytest.raises(CursorRejected):
        await adapter.read(MENTIONS, page.cursor)


async def test_429_waits_for_the_reset_and_sends_nothing_before(
        fake: FakeX, adapter: XAdapter) -> None:
    await adapter.whoami()
    fake.fail("mentions", 429, reset_in=120)
    with pytest.raises(RateLimited) as caught:
        await adapter.read(MENTIONS, None)
    reset = int(fake.requests_to("mentions")[-1].at) + 120
    assert abs(caught.value.until.timestamp() - reset) <= 2
    before = len(fake.requests)
    with pytest.raises(RateLimited):
        await adapter.read(MENTIONS, None)
    assert len(fake.requests) == before  # nothing went to X before the reset
    # Other endpoints have their own windows.
    await adapter.read(DIRECT, None)


async def test_reset_is_measured_on_xs_clock_not_ours(fake: FakeX, adapter: XAdapter) -> None:
    await adapter.whoami()
    fake.skew = 3600.0  # X's clock is an hour ahead of ours
    fake.fail("mentions", 429, reset_in=60)
    with pytest.raises(RateLimited) as caught:
        await adapter.read(MENTIONS, None)
    wait = (caught.value.until - datetime.now(UTC)).total_seconds()
    assert 50 <= wait <= 62


async def test_a_used_up_window_is_not_called_until_its_reset(
        fake: FakeX, adapter: XAdapter) -> None:
    await adapter.whoami()
    fake.exhaust("dm_events", reset_in=300)
    with pytest.raises(RateLimited) as caught:
        await adapter.read(DIRECT, None)
    assert caught.value.until > datetime.now(UTC) + timedelta(seconds=290)


@pytest.mark.parametrize("status", [500, 502, 503, 0])
async def test_server_errors_and_malformed_json_are_unavailable(
        fake: FakeX, adapter: XAdapter, status: int) -> None:
    await adapter.whoami()
    fake.fail("mentions", status)
    with pytest.raises(Unavailable):
        await adapter.read(MENTIONS, None)
    fake.mention(fake.add_user("liz"), "back again")
    assert len((await adapter.read(MENTIONS, None)).posts) == 1


async def test_network_errors_are_unavailable(fake: FakeX) -> None:
    await fake.stop()
    x = make_x_adapter(settings_for(fake))
    try:
        with pytest.raises(Unavailable):
            await x.whoami()
    finally:
        await x.close()


async def test_revoked_token_pauses_with_a_reason(fake: FakeX, adapter: XAdapter) -> None:
    await adapter.whoami()
    fake.revoke()
    with pytest.raises(Paused) as caught:
        await adapter.read(MENTIONS, None)
    assert "401" in str(caught.value) and "revoked" in str(caught.value)


@pytest.mark.parametrize("status", [402, 403])
async def test_payment_and_permission_refusals_pause(
        fake: FakeX, adapter: XAdapter, status: int) -> None:
    await adapter.whoami()
    fake.fail("dm_events", status)
    with pytest.raises(Refused) as caught:
        await adapter.read(DIRECT, None)
    assert caught.value.status == status and isinstance(caught.value, Paused)


async def test_wrong_secret_is_refused_by_the_signature_check(fake: FakeX) -> None:
    settings = settings_for(fake)
    settings.x_access_token_secret = SecretStr("not-the-secret")
    x = make_x_adapter(settings)
    try:
        with pytest.raises(Refused) as caught:
            await x.whoami()
        assert caught.value.status == 401
    finally:
        await x.close()


async def test_reply_and_direct_message_out(fake: FakeX, adapter: XAdapter) -> None:
    mia = fake.add_user("mia")
    complaint = fake.mention(mia, "broken kettle")
    reply_id = await adapter.reply(complaint.id, "@mia sorry! We sent you a DM.")
    sent = fake.tweets[reply_id]
    assert sent.replied_to == complaint.id and sent.author_id == fake.me.id
    dm_id = await adapter.send_direct(mia.id, "Your ticket is CL-7", None)
    assert [d.id for d in fake.sent_dms(mia)] == [dm_id]
    in_conversation = await adapter.send_direct("", "and a follow-up", fake.sent_dms(mia)[0]
                                                .dm_conversation_id)
    assert fake.sent_dms(mia)[-1].id == in_conversation


def test_cursor_round_trip() -> None:
    assert Cursor.parse(None) == Cursor()
    assert Cursor.parse("123").encode() == "123"
    mid = Cursor(since="5", token="abc", newest="9", read=100)
    assert Cursor.parse(mid.encode()) == mid
    first = Cursor(since=None, token="T", newest="9", read=100)
    assert Cursor.parse(first.encode()) == first
    with pytest.raises(CursorRejected):
        Cursor.parse("garbage")
