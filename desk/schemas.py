"""Request bodies of the JSON API. Unknown fields and wrong types are refused (422)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["new", "acknowledged", "in_progress", "waiting_customer", "resolved", "closed"]
Priority = Literal["P1", "P2", "P3", "P4"]
Category = Literal[
    "service_attitude",
    "service_speed",
    "product_quality",
    "product_safety",
    "billing",
    "pricing",
    "delivery",
    "returns",
    "store_environment",
    "website_app",
    "other",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CustomerIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")


class TicketIn(Strict):
    channel: Literal["phone", "email", "in_store"]
    description: str = Field(min_length=1, max_length=20_000)
    customer: CustomerIn
    kind: Literal["complaint", "suggestion", "praise", "question"] = "complaint"
    subject: str | None = Field(default=None, max_length=200)
    category: Category | None = None
    priority: Priority | None = None
    order_number: str | None = Field(default=None, max_length=64)
    store: str | None = Field(default=None, max_length=200)
    language: Literal["en", "zh"] | None = None


class StatusIn(Strict):
    status: Status
    note: str | None = Field(default=None, max_length=5_000)


class ReplyIn(Strict):
    text: str = Field(min_length=1, max_length=20_000)
    public: bool = True


class AssignIn(Strict):
    agent: str | None = Field(max_length=64)


class AgentIn(Strict):
    username: str = Field(min_length=1, max_length=64, pattern=r"^\S+$")
    role: Literal["admin", "agent"]
    password: str | None = Field(default=None, min_length=8, max_length=200)
    display_name: str | None = Field(default=None, max_length=200)
    language: Literal["en", "zh"] = "en"
