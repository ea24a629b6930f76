"""The ticket pages as an agent uses them (SQLite and PostgreSQL): the list and its views, the
ticket page's moves, replies, canned replies, overrides, merge, concurrent changes, staff-entered
tickets, escaping; and the override/merge/views API."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from storage import outbox, tickets
from storage.accounts import issue_token
from storage.clock import ManualClock
from storage.db import Store
from storage.models import Attachment, OutboxMessage, Ticket
from storage.queries import ticket_detail
from tests.desk_helpers import add_agent, desk_client, login
from tests.integration.helpers import chat_customer, chat_ticket, rules

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
async def desk(store: Store) -> AsyncIterator[tuple[TestClient, ManualClock, str]]:
    """A desk with alice (agent), bob (agent) and root (admin); alice is logged in."""
    clock = ManualClock()
    await add_agent(store, "alice")
    await add_agent(store, "bob")
    await add_agent(store, "root", role="admin")
    client = await desk_client(store, rules=rules(clock))
    token = await login(client, "alice")
    yield client, clock, token
    await client.close()


async def _outbox(store: Store, ticket_id: int, kind: str) -> list[OutboxMessage]:
    async with store.read() as s:
        return list((await s.scalars(
            select(OutboxMessage).where(OutboxMessage.ticket_id == ticket_id,
                                        OutboxMessage.kind == kind)
        )).all())


async def _post(client: TestClient, path: str, token: str, **data: str):  # type: ignore[no-untyped-def]
    return await client.post(path, data={"csrf_token": token, **data}, allow_redirects=False)


async def test_the_list_shows_sla_badges_most_urgent_first_and_escapes_customer_text(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, _ = desk
    r = rules(clock)
    who = await chat_customer(store, r)
    late = await chat_ticket(store, r, who, category="product_safety")  # P1: 15 min to respond
    calm = await chat_ticket(store, r, who, description=XSS)
    clock.advance(hours=2, minutes=20)
    html = await (await client.get("/tickets")).text()
    assert html.index(f"CL-{late}") < html.index(f"CL-{calm}")
    assert "first response breached 2 h 5 min ago" in html
    assert "first response in 1 h 40 min" in html
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    breached = await (await client.get("/tickets?view=breached")).text()
    assert f"CL-{late}" in breached and f"CL-{calm}" not in breached


async def test_mine_unassigned_and_a_saved_view(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, token = desk
    r = rules(clock)
    who = await chat_customer(store, r)
    mine, other = await chat_ticket(store, r, who), await chat_ticket(store, r, who)
    async with store.transaction() as s:
        await tickets.assign(s, r, mine, "alice", actor="agent:root")
    page = await (await client.get("/tickets?view=mine")).text()
    assert f"CL-{mine}<" in page and f"CL-{other}<" not in page
    page = await (await client.get("/tickets?view=unassigned")).text()
    assert f"CL-{other}<" in page and f"CL-{mine}<" not in page
    # The filters form posts repeated keys; the view keeps them as one list.
    page = await (await client.get("/tickets?status=new&status=in_progress&assignee=me")).text()
    assert f"CL-{mine}<" in page and f"CL-{other}<" not in page
    resp = await _post(client, "/tickets/views", token, name="My new work <b>",
                       query="status=new,in_progress&assignee=me")
    assert resp.status == 302
    page = await (await client.get(resp.headers["Location"])).text()
    assert "View saved." in page and "My new work &lt;b&gt;" in page
    assert 'href="/tickets?status=new%2Cin_progress&amp;assignee=me"' in page
    bad = await client.get("/tickets?priority=P7")
    assert bad.status == 422 and "priority: unknown value" in await bad.text()


async def test_the_ticket_page_offers_exactly_the_allowed_moves_and_a_move_notifies(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, token = desk
    r = rules(clock)
    who = await chat_customer(store, r)
    ticket = await chat_ticket(store, r, who)
    html = await (await client.get(f"/tickets/CL-{ticket}")).text()
    moves = re.findall(r'name="status" value="(\w+)" class="move"', html)
    assert moves == ["acknowledged", "in_progress", "resolved"]
    resp = await _post(client, f"/tickets/CL-{ticket}/status", token, status="in_progress",
                       seen_status="new")
    assert resp.status == 302 and resp.headers["Location"].endswith("?done=status")
    html = await (await client.get(resp.headers["Location"])).text()
    assert re.findall(r'name="status" value="(\w+)" class="move"', html) == [
        "waiting_customer", "resolved"]
    [note] = await _outbox(store, ticket, "status_changed")
    assert note.payload["status"] == "in_progress"
    # A move §5 does not allow is refused in words.
    refused = await _post(client, f"/tickets/CL-{ticket}/status", token, status="closed")
    assert refused.status == 409
    assert "cannot move from in_progress to closed" in await refused.text()


async def test_a_stale_status_form_is_refused_in_words_not_applied(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, token = desk
    r = rules(clock)
    who = await chat_customer(store, r)
    ticket = await chat_ticket(store, r, who)
    async with store.transaction() as s:  # bob resolved it while alice's page was open
        await tickets.move_ticket(s, r, ticket, "resolved", actor="agent:bob")
    resp = await _post(client, f"/tickets/CL-{ticket}/status", token, status="in_progress",
                       seen_status="new")
    assert resp.status == 409
    text = await resp.text()
    assert "changed meanwhile by bob" in text and "status is now resolved" in text
    async with store.read() as s:
        assert (await ticket_detail(s, ticket)).ticket.status == "resolved"


async def test_public_replies_reach_the_outbox_internal_notes_do_not(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, token = desk
    r = rules(clock)
    who = await chat_customer(store, r)
    ticket = await chat_ticket(store, r, who)
    async with store.transaction() as s:
        await tickets.add_customer_message(s, r, ticket, XSS)
    assert (await _post(client, f"/tickets/CL-{ticket}/reply", token, text="On it",
                        public="public")).status == 302
    assert (await _post(client, f"/tickets/CL-{ticket}/reply", token, text="VIP, careful",
                        public="internal")).status == 302
    [sent] = await _outbox(store, ticket, "agent_reply")
    assert sent.payload["text"] == "On it"
    html = await (await client.get(f"/tickets/CL-{ticket}")).text()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html and "<script>alert" not in html
    assert html.index("VIP, careful") > html.index("internal note")
    empty = await _post(client, f"/tickets/CL-{ticket}/reply", token, text="  ")
    assert empty.status == 422 and "text is empty" in await empty.text()


async def test_the_page_says_when_the_customer_blocked_the_bot_until_they_write_again(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, _ = desk
    r = rules(clock)
    who = await chat_customer(store, r)
    ticket = await chat_ticket(store, r, who)
    warning = "cannot be reached on this channel"
    assert warning not in await (await client.get(f"/tickets/CL-{ticket}")).text()
    async with store.transaction() as s:  # a send refused with 403, as the outbox worker does
        await outbox.set_reachable(s, reachable=False, identity_id=who.id,
                                   reason=f"Forbidden: bot was blocked by the user {XSS}")
    html = await (await client.get(f"/tickets/CL-{ticket}")).text()
    assert warning in html and "bot was blocked by the user" in html
    assert "<script>alert" not in html and "are not delivered until they write again" in html
    async with store.transaction() as s:  # they wrote again
        await outbox.set_reachable(s, reachable=True, identity_id=who.id)
    assert warning not in await (await client.get(f"/tickets/CL-{ticket}")).text()


async def test_agents_open_the_files_a_customer_sent_and_only_from_their_ticket(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, _ = desk
    r = rules(clock)
    who = await chat_customer(store, r)
    ticket, other = await chat_ticket(store, r, who), await chat_ticket(store, r, who)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
    async with store.transaction() as s:
        photo, script, elsewhere = (
            Attachment(ticket_id=t, channel="telegram", file_name=name, mime_type=mime,
                       size=len(body), content=body, created_at=clock())
            for t, name, mime, body in (
                (ticket, "broken mug.jpg", "image/jpeg", b"\xff\xd8jpeg bytes"),
                (ticket, "receipt.svg", "image/svg+xml", svg),
                (other, "other.jpg", "image/jpeg", b"\xff\xd8other"),
            )
        )
        s.add_all([photo, script, elsewhere])
    html = await (await client.get(f"/tickets/CL-{ticket}")).text()
    assert f'href="/tickets/CL-{ticket}/files/{photo.id}"' in html
    shown = await client.get(f"/tickets/CL-{ticket}/files/{photo.id}")
    assert shown.status == 200 and await shown.read() == b"\xff\xd8jpeg bytes"
    assert shown.content_type == "image/jpeg"
    assert shown.headers["Content-Disposition"].startswith("inline; filename*=UTF-8''broken%20mug")
    # A file that could run script is only ever downloaded, never rendered by the desk.
    saved = await client.get(f"/tickets/CL-{ticket}/files/{script.id}")
    assert saved.status == 200 and saved.content_type == "application/octet-stream"
    assert saved.headers["Content-Disposition"].startswith("attachment;")
    assert saved.headers["X-Content-Type-Options"] == "nosniff"
    for path in (f"/tickets/CL-{ticket}/files/{elsewhere.id}", f"/tickets/CL-{ticket}/files/x",
                 f"/tickets/CL-{ticket}/files/99999"):
        assert (await client.get(path)).status == 404
    assert (await client.get(f"/tickets/CL-{other}/files/{elsewhere.id}")).status == 200
    await client.post("/logout", data={"csrf_token": desk[2]}, allow_redirects=False)
    gone = await client.get(f"/tickets/CL-{ticket}/files/{photo.id}", allow_redirects=False)
    assert gone.status in (302, 303) and "/login" in gone.headers["Location"]


async def test_admins_manage_canned_replies_and_agents_insert_them_filled_in(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, _ = desk
    r = rules(clock)
    who = await chat_customer(store, r)
    ticket = await chat_ticket(store, r, who)
    assert (await client.get("/tickets/canned")).status == 403
    admin = await desk_client(store, rules=r)
    try:
        admin_token = await login(admin, "root")
        bad = await _post(admin, "/tickets/canned", admin_token, name="Oops", body="Hi {nme}")
        assert bad.status == 422 and "unknown variable {nme}" in await bad.text()
        ok = await _post(admin, "/tickets/canned", admin_token, name="Sorry",
                         body="Dear {customer}, {agent} is looking into {ticket} ({status}).")
        assert ok.status == 302
        assert "Sorry" in await (await admin.get("/tickets/canned")).text()
    finally:
        await admin.close()
    html = await (await client.get(f"/tickets/CL-{ticket}")).text()
    [canned_id] = re.findall(r'<option value="(\d+)" data-text=', html)
    filled = f"Dear Mei, alice is looking into CL-{ticket} (new)."
    assert f'data-text="{filled}"' in html
    prefilled = await (await client.get(f"/tickets/CL-{ticket}?canned={canned_id}")).text()
    assert f">{filled}</textarea>" in prefilled


async def test_a_priority_override_moves_deadlines_writes_an_event_and_tells_the_customer(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, token = desk
    r = rules(clock)
    who = await chat_customer(store, r)
    ticket = await chat_ticket(store, r, who)  # P3: 4 h / 72 h
    created = clock.now
    clock.advance(minutes=30)
    resp = await _post(client, f"/tickets/CL-{ticket}/priority", token, priority="P1",
                       seen_priority="P3")
    assert resp.status == 302
    async with store.read() as s:
        d = await ticket_detail(s, ticket)
    assert d.ticket.priority == "P1"
    assert d.ticket.first_response_due == created + timedelta(minutes=15)
    assert d.ticket.resolution_due == created + timedelta(hours=4)
    assert [(e.type, e.from_value, e.to_value, e.actor) for e in d.events][-1] == (
        "priority", "P3", "P1", "agent:alice")
    [told] = await _outbox(store, ticket, "deadline_changed")
    assert f"CL-{ticket}" in told.payload["text"]
    # The category, too; a form built before someone else's change is refused in words.
    assert (await _post(client, f"/tickets/CL-{ticket}/category", token,
                        category="billing", seen_category="delivery")).status == 302
    stale = await _post(client, f"/tickets/CL-{ticket}/priority", token, priority="P2",
                        seen_priority="P3")
    assert stale.status == 409 and "changed meanwhile by alice" in await stale.text()


async def test_two_agents_changing_one_ticket_at_once_keep_both_changes(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, token = desk
    r = rules(clock)
    who = await chat_customer(store, r)
    ticket = await chat_ticket(store, r, who)
    bob = await desk_client(store, rules=r)
    try:
        bob_token = await login(bob, "bob")
        results = await asyncio.gather(
            _post(client, f"/tickets/CL-{ticket}/priority", token, priority="P2",
                  seen_priority="P3"),
            _post(bob, f"/tickets/CL-{ticket}/category", bob_token, category="billing",
                  seen_category="delivery"),
            _post(bob, f"/tickets/CL-{ticket}/assign", bob_token, agent="bob"),
            _post(client, f"/tickets/CL-{ticket}/reply", token, text="Hello", public="public"),
        )
    finally:
        await bob.close()
    assert [resp.status for resp in results] == [302, 302, 302, 302]
    async with store.read() as s:
        d = await ticket_detail(s, ticket)
    assert (d.ticket.priority, d.ticket.category, d.assignee) == ("P2", "billing", "bob")
    assert [m.text for m in d.messages] == ["Hello"]
    assert {"priority", "category", "assigned", "reply"} <= {e.type for e in d.events}


async def test_merging_from_the_page(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, token = desk
    r = rules(clock)
    mei = await chat_customer(store, r, "5001")
    tom = await chat_customer(store, r, "5002")
    keep, dup = await chat_ticket(store, r, mei), await chat_ticket(store, r, mei)
    toms = await chat_ticket(store, r, tom)
    async with store.transaction() as s:
        await tickets.add_customer_message(s, r, dup, "the duplicate's message")
    refused = await _post(client, f"/tickets/CL-{toms}/merge", token, into=f"CL-{keep}")
    assert refused.status == 422 and "different customers" in await refused.text()
    resp = await _post(client, f"/tickets/CL-{dup}/merge", token, into=f"cl-{keep}")
    assert resp.headers["Location"] == f"/tickets/CL-{keep}?done=merged"
    html = await (await client.get(resp.headers["Location"])).text()
    assert "the duplicate&#39;s message" in html and f"from CL-{dup}" in html
    html = await (await client.get(f"/tickets/CL-{dup}")).text()
    assert "This ticket was merged into" in html and 'action="/tickets/CL-' + str(dup) + \
        '/reply"' not in html


async def test_a_staff_entered_ticket_from_the_form(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, _, token = desk
    form = {"channel": "in_store", "kind": "complaint", "name": "Ann Lee",
            "phone": "+44 20 7946 0000", "email": "", "description": "Broken glass in aisle 4",
            "category": "product_safety", "priority": "", "order_number": "",
            "store": "Leeds", "language": "en"}
    bad = await _post(client, "/tickets/new", token, **(form | {"email": "not-an-address"}))
    assert bad.status == 422 and "email" in await bad.text()
    resp = await _post(client, "/tickets/new", token, **form)
    assert resp.status == 302
    number = resp.headers["Location"].split("/")[-1].split("?")[0]
    async with store.read() as s:
        t = (await s.scalars(select(Ticket).where(Ticket.id == int(number[3:])))).one()
        d = await ticket_detail(s, t.id)
    assert (t.channel, t.priority, t.store) == ("in_store", "P1", "Leeds")
    assert d.customer.name == "Ann Lee" and d.events[0].actor == "agent:alice"


async def test_forms_without_a_csrf_token_are_refused(
    store: Store, desk: tuple[TestClient, ManualClock, str]
) -> None:
    client, clock, _ = desk
    r = rules(clock)
    ticket = await chat_ticket(store, r, await chat_customer(store, r))
    resp = await client.post(f"/tickets/CL-{ticket}/reply", data={"text": "hi"},
                             allow_redirects=False)
    assert resp.status == 403


async def test_the_api_overrides_merges_and_lists_views(store: Store) -> None:
    clock = ManualClock()
    r = rules(clock)
    await add_agent(store, "alice")
    async with store.transaction() as s:
        token = await issue_token(s, "alice", clock())
    auth = {"Authorization": f"Bearer {token}"}
    who = await chat_customer(store, r)
    a, b = await chat_ticket(store, r, who), await chat_ticket(store, r, who)
    client = await desk_client(store, rules=r)
    try:
        resp = await client.post(f"/api/tickets/CL-{a}/priority", headers=auth,
                                 json={"priority": "P2", "expected": "P3"})
        assert resp.status == 200 and (await resp.json())["priority"] == "P2"
        resp = await client.post(f"/api/tickets/CL-{a}/priority", headers=auth,
                                 json={"priority": "P1", "expected": "P3"})
        body = await resp.json()
        assert resp.status == 409 and body["error"]["code"] == "conflict"
        resp = await client.post(f"/api/tickets/CL-{a}/category", headers=auth,
                                 json={"category": None, "expected": "delivery"})
        assert (await resp.json())["category"] is None
        resp = await client.post(f"/api/tickets/CL-{b}/merge", headers=auth,
                                 json={"into": f"CL-{a}"})
        merged = await resp.json()
        assert resp.status == 200 and merged["number"] == f"CL-{a}"
        assert merged["events"][-1]["type"] == "merged_from"
        resp = await client.get("/api/tickets?view=unassigned", headers=auth)
        assert [t["number"] for t in (await resp.json())["items"]] == [f"CL-{a}"]
        resp = await client.post("/api/views", headers=auth,
                                 json={"name": "P2s", "query": "priority=P2"})
        assert resp.status == 201
        resp = await client.get("/api/views", headers=auth)
        names = [v["name"] for v in (await resp.json())["items"]]
        assert names == ["Mine", "Unassigned", "Breaching soon", "Breached", "P2s"]
        resp = await client.post("/api/canned-replies", headers=auth,
                                 json={"name": "x", "body": "y"})
        assert resp.status == 403
        spec = await (await client.get("/api/openapi.json")).json()
        assert spec["paths"]["/api/canned-replies"]["post"]["x-roles"] == ["admin"]
    finally:
        await client.close()
