"""The web chat through a real aiohttp server and websocket client, on SQLite and PostgreSQL.

The dialogue here is a small stand-in that behaves like the real one towards the channel: it
stores the customer's message, answers with replies that are also outbox rows, and opens a
ticket through the ticket service. What is tested is the channel: identity, delivery, limits.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from sqlalchemy import select

from bot.channel import Button, Inbound, Reply
from bot.webchat import WebChat
from bot.webchat_frames import ChatLimits
from bot.webchat_security import COOKIE_NAME, VisitorCookie
from desk.app import make_app
from desk.context import DeskContext
from storage import outbox
from storage.db import Store
from storage.dispatch import DispatchPolicy, dispatch_once
from storage.intake import TicketIntake
from storage.lifecycle import format_number
from storage.models import Conversation, Message, OutboxMessage, Ticket
from storage.outbox import Delivery
from storage.sla import SlaPolicy
from storage.tickets import NewTicket, TicketRules, create_ticket, identity_for, move_ticket
from storage.tickets import reply as agent_reply
from tests.integration.helpers import agent

SECRET = "test-secret-key-for-the-web-chat"
RECEIVE_TIMEOUT = 10.0


# --- stand-ins for bot.dialogue and bot.notifications -----------------------------------

@dataclass
class FakeDialogue:
    """Echoes, offers a yes/no keyboard, opens a ticket on "complain …", lists on /status."""

    store: Store
    rules: TicketRules
    seen: list[Inbound] = field(default_factory=list)

    async def __call__(self, inbound: Inbound) -> list[Reply]:
        self.seen.append(inbound)
        now = self.rules.clock()
        async with self.store.transaction() as s:
            identity = await identity_for(
                s, channel="webchat", external_id=inbound.customer_ref, display_name=None,
                language=inbound.language_hint, now=now,
            )
            conv = (await s.scalars(
                select(Conversation).where(Conversation.identity_id == identity.id)
            )).first()
            if conv is None:
                conv = Conversation(
                    identity_id=identity.id, state={}, language=inbound.language_hint or "en",
                    updated_at=now,
                )
                s.add(conv)
                await s.flush()
            text = inbound.text or inbound.button or ""
            s.add(Message(
                conversation_id=conv.id, direction="in", author_type="customer", text=text,
                channel="webchat", external_id=inbound.message_ref, created_at=now,
            ))
            buttons: list[list[list[str]]] = []
            if text == "/status":
                tickets = (await s.scalars(
                    select(Ticket).where(Ticket.customer_id == identity.customer_id)
                )).all()
                answer = "; ".join(
                    f"{format_number(t.id)}: {t.status.replace('_', ' ')}" for t in tickets
                ) or "You have no open tickets."
            elif text.startswith("complain "):
                ticket = await create_ticket(s, self.rules, NewTicket(
                    kind="complaint", channel="webchat", description=text[9:],
                    customer_id=identity.customer_id, identity_id=identity.id,
                    category="delivery", language="en",
                ))
                answer = f"Thank you. Your ticket is {format_number(ticket.id)}."
            elif inbound.attachments:
                a = inbound.attachments[0]
                answer = f"Got your photo ({a.mime_type}, {a.size} bytes)."
            else:
                answer = f"You said: {text}"
                buttons = [[["Yes", "yes"], ["No", "no"]]]
            row = outbox.enqueue(
                s, key=f"reply:{uuid.uuid4().hex}", channel="webchat", identity_id=identity.id,
                ticket_id=None, kind="reply", payload={"text": answer, "buttons": buttons},
                now=now,
            )
            row.next_attempt_at = now + timedelta(seconds=15)  # the backstop, as the real one
            await s.flush()
            return [Reply(answer, _buttons(buttons), ref=row.id)]


def _buttons(rows: list[list[list[str]]]) -> tuple[tuple[Button, ...], ...]:
    return tuple(tuple(Button(label, data) for label, data in row) for row in rows)


def fake_render(d: Delivery) -> list[Reply]:
    p = d.payload
    if d.kind == "reply":
        return [Reply(p["text"], _buttons(p.get("buttons", [])))]
    if d.kind == "status_changed":
        text = f"{p['number']} is now {p['status'].replace('_', ' ')}."
        if p["status"] == "resolved":
            score = (tuple(Button(str(n), f"csat:{n}") for n in range(1, 6)),)
            return [Reply(text), Reply("How did we do?", score)]
        return [Reply(text)]
    if d.kind == "agent_reply":
        return [Reply(f"{p['agent']}: {p['text']}")]
    return []  # ticket_created: the dialogue's own reply already carries the number


# --- the server --------------------------------------------------------------------------

@dataclass
class Harness:
    store: Store
    rules: TicketRules
    dialogue: FakeDialogue
    chat: WebChat
    client: TestClient[Any, Any]

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    async def open(
        self, *, cookie: bool = True, origin: str | None = None, lang: str = "en-GB"
    ) -> aiohttp.ClientWebSocketResponse:
        if cookie:
            assert (await self.client.get("/chat")).status == 200
        return await self.client.ws_connect(
            f"/chat/ws?lang={lang}", origin=origin or self.origin
        )

    async def dispatch(self, chat: WebChat | None = None) -> int:
        senders = {"webchat": (chat or self.chat).sender}
        return await dispatch_once(self.store, senders, DispatchPolicy(), worker="test")


async def build(
    store: Store, limits: ChatLimits | None = None
) -> tuple[TestClient[Any, Any], WebChat, FakeDialogue, TicketRules, TicketIntake]:
    rules = TicketRules(sla=SlaPolicy())
    dialogue = FakeDialogue(store, rules)
    chat = WebChat(store, dialogue, SECRET, fake_render, limits=limits or ChatLimits(
        poll_seconds=0.1
    ))
    intake = TicketIntake(store, rules)
    ctx = DeskContext(
        store=store, rules=rules, hasher=PasswordHasher(time_cost=1, memory_cost=1024),
        intake=intake,
    )
    client: TestClient[Any, Any] = TestClient(TestServer(make_app(ctx, extra=[chat.hook])))
    await client.start_server()
    return client, chat, dialogue, rules, intake


@pytest.fixture
async def h(store: Store) -> AsyncIterator[Harness]:
    client, chat, dialogue, rules, intake = await build(store)
    yield Harness(store, rules, dialogue, chat, client)
    await client.close()
    await intake.close()


async def frame(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
    assert msg.type == WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def until(ws: aiohttp.ClientWebSocketResponse, type_: str) -> dict[str, Any]:
    while True:
        f = await frame(ws)
        if f["type"] == type_:
            return f  # type: ignore[no-any-return]


async def turn(ws: aiohttp.ClientWebSocketResponse, payload: dict[str, Any]) -> list[Any]:
    """Sends one frame and returns the replies to it (the server acks after the last)."""
    cid = uuid.uuid4().hex
    await ws.send_json(payload | {"id": cid})
    replies = []
    while (f := await frame(ws))["type"] != "ack":
        assert f["type"] == "reply", f
        replies.append(f)
    assert f["id"] == cid
    return replies


async def say(ws: aiohttp.ClientWebSocketResponse, text: str) -> dict[str, Any]:
    [reply] = await turn(ws, {"type": "message", "text": text})
    return reply  # type: ignore[no-any-return]


async def all_sent(store: Store) -> bool:
    """Rows shown on a socket are marked delivered just after the frames go out."""
    for _ in range(50):
        if set((await statuses(store)).values()) == {"sent"}:
            return True
        await asyncio.sleep(0.05)
    return False


async def statuses(store: Store) -> dict[str, str]:
    async with store.read() as s:
        rows = (await s.execute(select(OutboxMessage.kind, OutboxMessage.status))).all()
    return {f"{kind}#{n}": status for n, (kind, status) in enumerate(rows)}


# --- the page ----------------------------------------------------------------------------

async def test_page_is_served_with_strict_headers_and_a_signed_httponly_cookie(
    h: Harness,
) -> None:
    r = await h.client.get("/chat")
    assert r.status == 200 and r.content_type == "text/html"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert f"ws://{r.url.host}:{r.url.port}" in csp
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    cookie = r.cookies[COOKIE_NAME]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]
    assert VisitorCookie(SECRET).verify(cookie.value) is not None
    html = await r.text()
    # No inline script or style, nothing from another origin.
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    assert "http://" not in html and "https://" not in html and "//" not in html.replace(
        "<!--", "")
    for name, kind in (("chat.js", "text/javascript"), ("chat.css", "text/css"),
                       ("camera.svg", "image/svg+xml")):
        asset = await h.client.get(f"/chat/static/{name}")
        assert asset.status == 200 and asset.content_type == kind
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
    assert (await h.client.get("/chat/static/../webchat.py")).status == 404
    assert (await h.client.get("/chat/static/chat.html")).status == 404


async def test_cookie_is_secure_behind_an_https_proxy(h: Harness) -> None:
    r = await h.client.get("/chat", headers={"X-Forwarded-Proto": "https"})
    assert r.cookies[COOKIE_NAME]["secure"]


async def test_the_script_never_uses_innerhtml(h: Harness) -> None:
    js = await (await h.client.get("/chat/static/chat.js")).text()
    assert ".innerHTML" not in js and ".outerHTML" not in js and "insertAdjacentHTML" not in js
    assert "eval(" not in js and "document.write" not in js
    assert "textContent" in js


# --- conversations -----------------------------------------------------------------------

async def test_conversation_round_trip_with_buttons(h: Harness) -> None:
    ws = await h.open(lang="zh-CN")
    history = await frame(ws)
    assert history == {"type": "history", "language": None, "items": []}
    reply = await say(ws, "hello there")
    assert reply["text"] == "You said: hello there"
    assert reply["buttons"] == [[{"label": "Yes", "data": "yes"}, {"label": "No", "data": "no"}]]
    assert isinstance(reply["ref"], int)
    await ws.send_json({"type": "button", "data": "yes", "ref": reply["ref"], "id": "b1"})
    assert (await until(ws, "reply"))["text"] == "You said: yes"
    inbound = h.dialogue.seen
    assert inbound[0].channel == "webchat" and inbound[0].language_hint == "zh"
    assert inbound[1].button == "yes" and inbound[1].button_ref == str(reply["ref"])
    assert inbound[0].customer_ref == inbound[1].customer_ref
    # Shown inline, so the worker has nothing left to send twice.
    assert await all_sent(h.store)
    assert await h.dispatch() == 0
    await ws.close()


async def test_returning_visitor_is_the_same_customer_and_sees_the_history(h: Harness) -> None:
    ws = await h.open()
    await frame(ws)
    created = await say(ws, "complain my parcel never came")
    number = created["text"].split()[-1].rstrip(".")
    assert number.startswith("CL-")
    await ws.close()

    ws = await h.open()  # same cookie jar: the page and the socket send the cookie back
    history = await frame(ws)
    assert [(i["from"], i["text"]) for i in history["items"]] == [
        ("customer", "complain my parcel never came"),
        ("bot", f"Thank you. Your ticket is {number}."),
    ]
    assert history["language"] == "en"
    status = await say(ws, "/status")
    assert status["text"] == f"{number}: new"
    await ws.close()


async def test_tampered_cookie_is_a_new_visitor(h: Harness) -> None:
    ws = await h.open()
    await frame(ws)
    await say(ws, "complain broken glass")
    await ws.close()
    jar = h.client.session.cookie_jar
    original = next(c for c in jar if c.key == COOKIE_NAME).value
    visitor, signature = original.split(".")
    forged = ("A" if visitor[0] != "A" else "B") + visitor[1:] + "." + signature
    jar.clear()
    jar.update_cookies({COOKIE_NAME: forged}, h.client.make_url("/chat"))

    ws = await h.client.ws_connect("/chat/ws", origin=h.origin)
    assert (await frame(ws))["items"] == []  # not the original visitor's history
    assert (await say(ws, "/status"))["text"] == "You have no open tickets."
    await ws.close()
    assert h.dialogue.seen[-1].customer_ref not in (visitor, forged.split(".")[0])

    r = await h.client.get("/chat", headers={"Cookie": f"{COOKIE_NAME}={forged}"})
    fresh = r.cookies[COOKIE_NAME].value
    assert fresh.split(".")[0] not in (visitor, forged.split(".")[0])
    assert VisitorCookie(SECRET).verify(fresh) is not None


@pytest.mark.parametrize("origin", ["http://evil.example", "null", None, "ftp://127.0.0.1"])
async def test_cross_site_socket_is_refused(h: Harness, origin: str | None) -> None:
    await h.client.get("/chat")
    headers = {"Origin": origin} if origin else {}
    url = h.client.make_url("/chat/ws")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        # A bare session: the test client would add an Origin of its own otherwise.
        async with aiohttp.ClientSession(cookie_jar=h.client.session.cookie_jar) as session:
            await session.ws_connect(url, headers=headers, autoclose=True)
    assert refused.value.status == 403
    assert h.dialogue.seen == []


async def test_oversize_message_gets_a_clear_error_and_nothing_is_stored(h: Harness) -> None:
    ws = await h.open()
    await frame(ws)
    await ws.send_json({"type": "message", "text": "x" * 4001, "id": "long"})
    error = await frame(ws)
    assert error["type"] == "error" and error["code"] == "too_long"
    assert error["id"] == "long" and error["limit"] == 4000
    assert "4,000" in error["message"]
    assert h.dialogue.seen == []
    # The socket carries on, and exactly 4,000 characters is fine.
    assert (await say(ws, "y" * 4000))["text"] == "You said: " + "y" * 4000
    await ws.close()


async def test_junk_frames_are_answered_not_fatal(h: Harness) -> None:
    ws = await h.open()
    await frame(ws)
    for junk in ("not json", "[]", json.dumps({"type": "launch"}),
                 json.dumps({"type": "message", "text": 5}),
                 json.dumps({"type": "message", "text": "   "})):
        await ws.send_str(junk)
        assert (await frame(ws))["type"] == "error"
    await ws.send_bytes(b"\x00\x01")
    assert (await frame(ws))["code"] == "bad_frame"
    assert (await say(ws, "still here"))["text"] == "You said: still here"
    await ws.close()


async def test_photo_is_passed_on_and_non_images_are_refused(h: Harness) -> None:
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    ws = await h.open()
    await frame(ws)
    [reply] = await turn(ws, {"type": "photo", "name": "shelf.png",
                              "data": base64.b64encode(png).decode()})
    assert reply["text"] == f"Got your photo (image/png, {len(png)} bytes)."
    attachment = h.dialogue.seen[-1].attachments[0]
    assert attachment.kind == "photo" and attachment.content == png
    await ws.send_json({"type": "photo", "name": "x.html", "id": "p2",
                        "data": base64.b64encode(b"<script>alert(1)</script>").decode()})
    error = await frame(ws)
    assert error["code"] == "not_an_image" and error["id"] == "p2"
    await ws.close()


async def test_a_burst_is_slowed_down_and_answered_in_order(store: Store) -> None:
    limits = ChatLimits(burst=3, per_second=5.0, poll_seconds=0.1)
    client, chat, _dialogue, rules, intake = await build(store, limits)
    try:
        h = Harness(store, rules, _dialogue, chat, client)
        ws = await h.open()
        await frame(ws)
        for n in range(10):
            await ws.send_json({"type": "message", "text": f"m{n}", "id": f"c{n}"})
        frames: list[dict[str, Any]] = []
        while len([f for f in frames if f["type"] == "reply"]) < 10:
            frames.append(await frame(ws))
        assert any(f["type"] == "error" and f["code"] == "slow_down" for f in frames)
        assert [f["text"] for f in frames if f["type"] == "reply"] == [
            f"You said: m{n}" for n in range(10)
        ]
        await ws.close()
    finally:
        await client.close()
        await intake.close()


async def test_a_flood_closes_that_socket_and_the_server_carries_on(store: Store) -> None:
    limits = ChatLimits(burst=3, per_second=5.0, max_backlog=10, poll_seconds=0.1)
    client, chat, dialogue, rules, intake = await build(store, limits)
    try:
        h = Harness(store, rules, dialogue, chat, client)
        ws = await h.open()
        await frame(ws)
        for n in range(200):
            await ws.send_json({"type": "message", "text": f"spam {n}"})
        codes = []
        while True:
            msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
            if msg.type != WSMsgType.TEXT:
                break
            f = json.loads(msg.data)
            codes.append(f.get("code"))
        assert "flood" in codes
        assert ws.close_code == 1008
        assert len(dialogue.seen) < 30  # it never ran through the 200
        ws = await h.open()
        await frame(ws)
        # Answers to the queued spam may still arrive here (same visitor): the last is ours.
        replies = await turn(ws, {"type": "message", "text": "hello again"})
        assert replies[-1]["text"] == "You said: hello again"
        await ws.close()
    finally:
        await client.close()
        await intake.close()


# --- delivery ----------------------------------------------------------------------------

async def _ticket_of(h: Harness, ws: aiohttp.ClientWebSocketResponse) -> int:
    created = await say(ws, "complain the shelf fell on my foot")
    number = created["text"].split()[-1].rstrip(".")
    return int(number.removeprefix("CL-"))


async def test_status_update_is_pushed_to_an_open_socket(h: Harness) -> None:
    ws = await h.open()
    await frame(ws)
    ticket_id = await _ticket_of(h, ws)
    async with h.store.transaction() as s:
        await move_ticket(s, h.rules, ticket_id, "in_progress", actor="agent:alice")
    assert await h.dispatch() >= 1  # the worker, in this process
    pushed = await until(ws, "reply")
    assert pushed["text"] == f"{format_number(ticket_id)} is now in progress."
    assert await all_sent(h.store)
    # A resolution brings the 1-5 keyboard; its buttons name the outbox row they came with.
    async with h.store.transaction() as s:
        await move_ticket(s, h.rules, ticket_id, "resolved", actor="agent:alice")
    await h.dispatch()
    await until(ws, "reply")
    survey = await until(ws, "reply")
    assert [b["label"] for b in survey["buttons"][0]] == ["1", "2", "3", "4", "5"]
    await ws.send_json({"type": "button", "data": "csat:5", "ref": survey["ref"], "id": "s"})
    await until(ws, "reply")
    assert h.dialogue.seen[-1].button_ref == str(survey["ref"])
    await ws.close()


async def test_rows_written_elsewhere_reach_the_socket_by_polling(store: Store) -> None:
    """Two desk processes: the visitor's socket is in A, the worker runs in B."""
    client_a, chat_a, dialogue, rules, intake_a = await build(store)
    client_b, chat_b, _, _, intake_b = await build(store)
    try:
        h = Harness(store, rules, dialogue, chat_a, client_a)
        ws = await h.open()
        await frame(ws)
        ticket_id = await _ticket_of(h, ws)
        alice = await agent(store)
        async with store.transaction() as s:
            await agent_reply(s, rules, ticket_id, "We are on it <b>today</b>.", public=True,
                              agent=alice)
        # B has no socket for this visitor: it files the row as delivered (the mailbox) ...
        assert await h.dispatch(chat_b) >= 1
        # ... and A's poll shows it on the open socket.
        pushed = await until(ws, "reply")
        assert pushed["text"] == "alice: We are on it <b>today</b>."
        # Pending rows nobody dispatched are found the same way, and marked delivered.
        async with store.transaction() as s:
            await move_ticket(s, rules, ticket_id, "in_progress", actor="agent:alice")
        assert (await until(ws, "reply"))["text"].endswith("is now in progress.")
        await asyncio.sleep(0.3)
        assert await h.dispatch(chat_b) == 0
        # Each row was shown once, even though A's own worker may try it too.
        await h.dispatch(chat_a)
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.5)
        await ws.close()
    finally:
        await client_a.close()
        await client_b.close()
        await intake_a.close()
        await intake_b.close()


async def test_a_message_sent_while_away_is_there_when_the_visitor_returns(h: Harness) -> None:
    ws = await h.open()
    await frame(ws)
    ticket_id = await _ticket_of(h, ws)
    await ws.close()
    await asyncio.sleep(0.05)
    assert h.chat.open_sockets == 0

    alice = await agent(h.store)
    async with h.store.transaction() as s:
        await agent_reply(s, h.rules, ticket_id, "Sorry! A refund is on its way.", public=True,
                          agent=alice)
        await move_ticket(s, h.rules, ticket_id, "resolved", actor="agent:alice")
    assert await h.dispatch() >= 2
    assert await all_sent(h.store), await statuses(h.store)

    ws = await h.open()
    texts = [i["text"] for i in (await frame(ws))["items"]]
    number = format_number(ticket_id)
    assert texts[-3:] == [
        "alice: Sorry! A refund is on its way.", f"{number} is now resolved.", "How did we do?"
    ]
    # Nothing of it comes a second time as a push.
    await asyncio.sleep(0.3)
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.3)
    await ws.close()


async def test_replies_left_by_a_dropped_socket_come_back_in_the_history(h: Harness) -> None:
    """The dialogue committed its replies but the socket died before showing them: they are
    pending outbox rows, shown on the next connect and then marked delivered."""
    await h.client.get("/chat")
    visitor = next(c for c in h.client.session.cookie_jar if c.key == COOKIE_NAME).value
    replies = await h.dialogue(Inbound(
        channel="webchat", customer_ref=visitor.split(".")[0], message_ref="lost-1",
        text="is anyone there?",
    ))
    ws = await h.client.ws_connect("/chat/ws", origin=h.origin)
    items = (await frame(ws))["items"]
    assert [(i["from"], i["text"]) for i in items] == [
        ("customer", "is anyone there?"), ("bot", replies[0].text)
    ]
    assert await all_sent(h.store)
    await ws.close()


async def test_shutdown_closes_open_sockets_at_once(store: Store) -> None:
    client, chat, dialogue, rules, intake = await build(store)
    h = Harness(store, rules, dialogue, chat, client)
    ws = await h.open()
    await frame(ws)
    closing = asyncio.ensure_future(client.close())
    msg = await ws.receive(timeout=5)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    await asyncio.wait_for(closing, timeout=5)
    await intake.close()
    assert chat.open_sockets == 0


async def test_standalone_hook_on_a_bare_application(store: Store) -> None:
    """The hook needs nothing from the desk: any aiohttp app can carry the chat."""
    rules = TicketRules(sla=SlaPolicy())
    chat = WebChat(store, FakeDialogue(store, rules), SECRET, fake_render)
    app = web.Application()
    chat.hook(app)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/chat")).status == 200
