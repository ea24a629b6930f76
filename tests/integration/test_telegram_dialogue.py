"""Whole conversations through the real dialogue over Telegram (PTB ↔ fake Bot API), and two
bot processes behind one webhook URL sharing a PostgreSQL store."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.dialogue import make_dialogue
from bot.flows.turn import ChatPolicy
from storage import outbox
from storage.db import Store
from storage.models import OutboxMessage, Ticket
from storage.sla import SlaPolicy
from storage.tickets import TicketRules
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_harness import load_balancer, running_channel
from tests.fakes.telegram_updates import Customer
from tests.integration.test_dialogue_support import shared_interpreter

NUMBER = re.compile(r"CL-\d+")


def dialogue(store: Store) -> Any:
    return make_dialogue(store, TicketRules(sla=SlaPolicy()), shared_interpreter())


async def tickets(store: Store) -> list[Ticket]:
    async with store.read() as s:
        return list((await s.scalars(select(Ticket).order_by(Ticket.id))).all())


class Phone:
    """The customer's Telegram app: writes, presses buttons, reads what arrived."""

    def __init__(self, fake: FakeTelegram, customer: Customer) -> None:
        self.fake, self.customer = fake, customer

    async def say(self, text: str) -> str:
        before = len(self.fake.bot_messages(self.customer.id))
        self.fake.text(self.customer, text)
        return await self._new_since(before)

    async def press(self, prefix: str) -> str:
        message, data = self.button(prefix)
        before = len(self.fake.bot_messages(self.customer.id))
        self.fake.press(self.customer, message, data)
        return await self._new_since(before)

    def button(self, prefix: str) -> tuple[int, str]:
        for m in reversed(self.fake.bot_messages(self.customer.id)):
            for row in m.get("reply_markup", {}).get("inline_keyboard", []):
                for b in row:
                    if b["callback_data"].startswith(prefix):
                        return m["message_id"], b["callback_data"]
        raise AssertionError(f"no {prefix!r} button in {self.fake.texts_to(self.customer.id)}")

    async def _new_since(self, before: int) -> str:
        await self.fake.wait_for_messages(self.customer.id, before + 1)
        await asyncio.sleep(0.1)  # a reply may come in several messages
        return "\n".join(self.fake.texts_to(self.customer.id)[before:])


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_an_english_complaint_ends_with_a_ticket_number(
    fake: FakeTelegram, store: Store, mode: str
) -> None:
    phone = Phone(fake, Customer(5001, "Mei", "en"))
    async with running_channel(fake, store, mode, dialogue(store)):  # type: ignore[arg-type]
        welcome = await phone.say("/start")
        assert "Mei" in welcome
        first = await phone.say("My parcel for order 123-4567 never arrived")
        assert "photo" in first.lower()
        summary = await phone.press("skip:")
        assert "123-4567" in summary
        confirmation = await phone.press("confirm:")
        number = NUMBER.search(confirmation)
        assert number, confirmation
        status = await phone.say(f"/status {number.group()}")
        assert number.group() in status
    [ticket] = await tickets(store)
    assert ticket.channel == "telegram" and ticket.order_number == "123-4567"
    assert len(fake.answered) == 2  # both buttons answered


async def test_a_chinese_complaint_with_a_photo(fake: FakeTelegram, store: Store) -> None:
    phone = Phone(fake, Customer(8008, "李雷", "zh-hans"))
    async with running_channel(fake, store, "webhook", dialogue(store)):
        first = await phone.say("订单 123-4567 的快递一直没到")
        assert "照片" in first
        before = len(fake.bot_messages(8008))
        fake.photo(phone.customer, b"\xff\xd8" + b"p" * 5000)
        await fake.wait_for_messages(8008, before + 1)
        await asyncio.sleep(0.1)
        confirmation = await phone.say("是") if "确认" not in fake.texts_to(8008)[-1] else ""
        if not NUMBER.search(confirmation):
            confirmation = await phone.press("confirm:")
        assert NUMBER.search(confirmation), fake.texts_to(8008)
    [ticket] = await tickets(store)
    assert ticket.language == "zh"


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_two_processes_behind_one_webhook_share_a_conversation(
    fake: FakeTelegram, store: Store
) -> None:
    """Two PTB applications, each on its own HTTP server, behind a round-robin proxy, one
    PostgreSQL store. Every update is also delivered a second time (a lost 200), landing on
    the other process: each customer still gets exactly one answer per message."""
    backends: list[str] = []
    policy = ChatPolicy(burst=1000)
    rules = TicketRules(sla=SlaPolicy())
    one = make_dialogue(store, rules, shared_interpreter(), policy=policy)
    two = make_dialogue(store, rules, shared_interpreter(), policy=policy)
    customers = [Customer(7000 + i, f"C{i}", "en") for i in range(6)]
    async with load_balancer(backends) as public, \
            running_channel(fake, store, "webhook", one, public_url=public,
                            local_urls=backends), \
            running_channel(fake, store, "webhook", two, public_url=public,
                            local_urls=backends):
        for round_ in range(4):
            for c in customers:
                uid = fake.text(c, f"hello {round_}")
                update = fake.pending_update(uid)
                assert update is not None
                await fake.wait_for_messages(c.id, round_ + 1)
                fake.redeliver(uid, {"message": update["message"]})
        await asyncio.sleep(0.5)
        posts = len(fake.webhook_posts)
    assert posts == 2 * 4 * len(customers)
    for c in customers:
        assert len(fake.bot_messages(c.id)) == 4, fake.texts_to(c.id)
    async with store.read() as s:
        pending = await s.scalar(select(func.count()).where(
            OutboxMessage.status == outbox.PENDING))
    assert pending == 0  # every reply was sent inline and marked: the worker sends nothing
