"""Small builders shared by the integration tests."""

from __future__ import annotations

from storage.clock import ManualClock
from storage.db import Store
from storage.models import Agent, ChannelIdentity
from storage.sla import SlaPolicy
from storage.tickets import NewTicket, TicketRules, create_ticket, identity_for


def rules(clock: ManualClock | None = None) -> TicketRules:
    return TicketRules(sla=SlaPolicy(), clock=clock or ManualClock())


async def chat_customer(store: Store, r: TicketRules, external_id: str = "5001") -> ChannelIdentity:
    async with store.transaction() as session:
        return await identity_for(
            session, channel="telegram", external_id=external_id, display_name="Mei",
            language="en", now=r.clock(),
        )


async def chat_ticket(
    store: Store, r: TicketRules, identity: ChannelIdentity, **kw: object
) -> int:
    fields: dict[str, object] = {
        "kind": "complaint", "channel": "telegram", "description": "My parcel never arrived",
        "customer_id": identity.customer_id, "identity_id": identity.id, "category": "delivery",
    } | kw
    async with store.transaction() as session:
        ticket = await create_ticket(session, r, NewTicket(**fields))  # type: ignore[arg-type]
        return ticket.id


async def agent(store: Store, username: str = "alice", role: str = "agent") -> Agent:
    from argon2 import PasswordHasher

    from storage.accounts import upsert_agent

    async with store.transaction() as session:
        return await upsert_agent(
            session, PasswordHasher(time_cost=1, memory_cost=1024), username=username, role=role,
            password=None, now=ManualClock().now,
        )
