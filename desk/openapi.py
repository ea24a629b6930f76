"""/api/openapi.json, built from the operation table and the request models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from desk.routes import Operation

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_TS = {"type": ["string", "null"], "format": "date-time"}
TICKET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["number", "status", "priority", "channel", "kind", "created_at"],
    "properties": {
        "number": {"type": "string", "pattern": "^CL-[0-9]+$"},
        "status": {"type": "string"},
        "priority": {"type": "string"},
        "category": {"type": ["string", "null"]},
        "channel": {"type": "string"},
        "kind": {"type": "string"},
        "subject": {"type": "string"},
        "description": {"type": "string"},
        "customer": {"type": "object"},
        "assignee": {"type": ["string", "null"]},
        "created_at": _TS,
        "first_response_due": _TS,
        "resolution_due": _TS,
        "first_response_at": _TS,
        "resolved_at": _TS,
        "csat": {"type": ["integer", "null"]},
        "events": {"type": "array", "items": {"type": "object"}},
        "messages": {"type": "array", "items": {"type": "object"}},
    },
}

# CONTRACT §7 mention JSON (desk/serialize.py mention_json).
MENTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "platform", "external_id", "url", "author", "text", "state", "priority",
                 "category", "sentiment", "created_at", "group_size", "ticket"],
    "properties": {
        "id": {"type": "integer"},
        "platform": {"type": "string"},
        "external_id": {"type": "string"},
        "url": {"type": ["string", "null"]},
        "author": {"type": "object", "properties": {
            "username": {"type": ["string", "null"]}, "followers": {"type": ["integer", "null"]}}},
        "text": {"type": "string"},
        "state": {"type": "string"},
        "priority": {"type": ["string", "null"]},
        "category": {"type": ["string", "null"]},
        "sentiment": {"type": ["object", "null"]},
        "created_at": _TS,
        "group_size": {"type": "integer"},
        "ticket": {"type": ["string", "null"], "pattern": "^CL-[0-9]+$"},
        "version": {"type": "integer"},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def build_spec(operations: Iterable[Operation]) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": ERROR_SCHEMA,
        "Ticket": TICKET_SCHEMA,
        "TicketPage": _page("Ticket"),
        "Agent": {"type": "object"},
        "ReportSummary": {"type": "object", "required": [
            "tickets", "csat", "first_response_minutes", "resolution_hours", "resolution_rate",
            "sla", "top_categories", "mentions"]},
        "Csv": {"type": "string", "description": "text/csv with a header row"},
        "AgentPage": _page("Agent"),
        "CannedReply": {"type": "object", "required": ["id", "name", "body"]},
        "CannedReplyPage": _page("CannedReply"),
        "View": {"type": "object", "required": ["name", "query", "shared", "built_in"]},
        "ViewPage": _page("View"),
        "Deleted": {"type": "object", "properties": {"deleted": {"type": "integer"}}},
        "Reply": {"type": "object", "properties": {"message": {"type": "object"},
                                                   "delivery": {"type": "string"}}},
        "Mention": MENTION_SCHEMA,
        "MentionPage": _page("Mention"),
        "MentionReply": {"type": "object", "properties": {"mention": _ref("Mention"),
                                                          "delivery": {"type": "string"}}},
        "MentionBulk": {"type": "object", "required": ["results"],
                        "properties": {"results": {"type": "array", "items": {"type": "object"}}}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        error = {"content": {"application/json": {"schema": _ref("Error")}}}
        item: dict[str, Any] = {
            "summary": op.summary,
            "operationId": op.handler.__name__,
            "x-roles": list(op.roles),
            "security": [{"bearer": []}, {"cookie": []}],
            "responses": {
                str(op.status): {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{op.response}"}
                        }
                    },
                },
                **{
                    code: {"description": text, **error}
                    for code, text in (
                        ("400", "malformed JSON"),
                        ("401", "no or bad credentials"),
                        ("403", "role may not, or CSRF token missing"),
                        ("404", "unknown id"),
                        ("409", "a move CONTRACT §5 does not allow"),
                        ("413", "body over 1 MiB"),
                        ("422", "unknown field or wrong type, named in the message"),
                    )
                },
            },
        }
        params = [
            {"name": name, "in": "query", "required": False, "description": desc,
             "schema": {"type": "string"}}
            for name, desc in op.query
        ]
        if "{number}" in op.path:
            params.append({"name": "number", "in": "path", "required": True,
                           "schema": {"type": "string", "pattern": "^CL-[0-9]+$"}})
        if "{id}" in op.path:
            params.append({"name": "id", "in": "path", "required": True,
                           "schema": {"type": "integer"}})
        if params:
            item["parameters"] = params
        if op.body is not None:
            name = op.body.__name__
            schema = op.body.model_json_schema(ref_template="#/components/schemas/{model}")
            for sub, sub_schema in schema.pop("$defs", {}).items():
                schemas[sub] = sub_schema
            schemas[name] = schema
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(name)}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "careloop desk API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "careloop_session"},
            },
        },
    }
