"""Batched intake: many concurrent creates, each acknowledged only once committed, none lost,
none doubled, and a repeated intake key gives back the same ticket."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from storage.db import Store
from storage.errors import Invalid
from storage.intake import TicketIntake
from storage.models import OutboxMessage, Ticket, TicketEvent
from storage.tickets import NewTicket
from tests.integration.helpers import chat_customer, rules


async def _count(store: Store, model: type) -> int:
    async with store.read() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def test_concurrent_creates_are_batched_and_each_gets_its_own_ticket(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    intake = TicketIntake(store, r)
    try:
        made = await asyncio.gather(*(
            intake.create(NewTicket(kind="complaint", channel="telegram",
                                    description=f"complaint number {i}",
                                    customer_id=who.customer_id, identity_id=who.id))
            for i in range(300)
        ))
    finally:
        await intake.close()
    assert len({m.id for m in made}) == 300 and all(m.created for m in made)
    async with store.read() as s:
        texts = dict((await s.execute(select(Ticket.id, Ticket.description))).all())
    assert {texts[m.id] for m in made} == {f"complaint number {i}" for i in range(300)}
    assert await _count(store, TicketEvent) == 300
    assert await _count(store, OutboxMessage) == 300
    async with store.read() as s:
        payloads = (await s.scalars(select(OutboxMessage.payload))).all()
    payload_numbers = {p["number"] for p in payloads}
    assert payload_numbers == {f"CL-{m.id}" for m in made}


async def test_the_same_intake_key_makes_one_ticket(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    intake = TicketIntake(store, r)

    def new(i: int) -> NewTicket:
        return NewTicket(kind="complaint", channel="telegram", description=f"retry {i}",
                         customer_id=who.customer_id, identity_id=who.id,
                         intake_key="conversation-9:confirm")
    try:
        first = await asyncio.gather(*(intake.create(new(i)) for i in range(5)))
        again = await intake.create(new(99))
    finally:
        await intake.close()
    assert len({m.id for m in [*first, again]}) == 1
    assert [m.created for m in first].count(True) == 1 and again.created is False
    assert await _count(store, Ticket) == 1 and await _count(store, OutboxMessage) == 1


async def test_bad_input_fails_alone(store: Store) -> None:
    r = rules()
    who = await chat_customer(store, r)
    intake = TicketIntake(store, r)
    try:
        with pytest.raises(Invalid):
            await intake.create(NewTicket(kind="complaint", channel="carrier_pigeon",
                                          description="x", customer_id=who.customer_id))
        good, bad = await asyncio.gather(
            intake.create(NewTicket(kind="praise", channel="telegram", description="thanks!",
                                    customer_id=who.customer_id, identity_id=who.id)),
            intake.create(NewTicket(kind="complaint", channel="phone", description="ghost",
                                    customer_id=987654)),  # no such customer: FK fails
            return_exceptions=True,
        )
    finally:
        await intake.close()
    assert not isinstance(good, BaseException) and good.created
    assert isinstance(bad, Exception)
    assert await _count(store, Ticket) == 1
