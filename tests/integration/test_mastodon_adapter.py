"""The Mastodon adapter: the real Mastodon.py talking HTTP to the fake Mastodon server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from monitors.mastodon import (
    MastodonAdapter,
    MastodonApi,
    make_client,
    make_mastodon_adapter,
    plain_text,
    split_text,
)
from monitors.types import DIRECT, MENTIONS, CursorRejected, Paused, RateLimited, Unavailable
from tests.fakes.mastodon_api import TOKEN, FakeMastodon


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

    assert [p.text for p in page.posts] == [
        "@shop My order 123-4567 arrived broken!", "@shop Love the new store",
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
    query = server.calls("GET", "/api/v1/notifications")[0].query
    assert query["types[]"] == ["mention"]


async def test_direct_messages_are_their_own_stream(
    server: FakeMastodon, adapter: MastodonAdapter
) -> None:
    mei = server.account("mei", display_name="Mei")
    public = server.mention(mei, "public words")
    dm = server.dm(mei, "my parcel is late")

    dms = await adapter.read(DIRECT, None)
    mentions = await adapter.read(MENTIONS, None)

    assert [p.external_id for p in dms.posts] == [dm["id"]]
    assert dms.posts[0].text == "my parcel is late"  # our own @handle is not what they said
    assert dms.posts[0].conversation == dm["id"]
    assert dms.posts[0].stream == DIRECT
    assert [p.external_id for p in mentions.posts] == [public["id"]]
    assert mentions.posts[0].conversation is None


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
