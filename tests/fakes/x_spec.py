"""X API v2 as X publishes it (../shared/data/x/x_api_v2_openapi.json), used to check the
requests tweepy sends to the fake and every answer the fake gives, so the fake cannot drift
from the real API.

A small OpenAPI 3.0 schema checker (type, nullable, properties, required,
additionalProperties, items, min/maxItems, enum, pattern, min/maxLength, minimum/maximum,
oneOf with discriminator, anyOf, allOf, $ref): enough for this spec, no network, no package.

The published spec has moved to "post" names while the API on the wire (and every recorded
exchange, and tweepy) still speaks "tweet": `tweet.fields` is `post.fields`,
`referenced_tweets` is `referenced_posts`, `edit_history_tweet_ids` is
`edit_history_post_ids`, a user's `tweet_count` is `post_count`, and problem types live under
api.twitter.com instead of api.x.com. WIRE_NAMES maps one onto the other before checking; it
is the only leniency, and it is listed here rather than hidden. The `*.fields` enums also lag
the spec's own object schemas (Post has `author_id`, the post.fields enum doesn't): a field
is accepted when it is in the enum or is a property of the object it selects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPENAPI_JSON = Path(__file__).resolve().parents[3] / "shared" / "data" / "x" / (
    "x_api_v2_openapi.json"
)
WIRE_PARAMS = {"tweet.fields": "post.fields"}
WIRE_VALUES = {
    "referenced_tweets": "referenced_posts",
    "referenced_tweets.id": "referenced_posts",
    "referenced_tweets.id.author_id": "referenced_posts",
    "edit_history_tweet_ids": "edit_history_post_ids",
}
WIRE_NAMES = {
    "edit_history_tweet_ids": "edit_history_post_ids",
    "referenced_tweets": "referenced_posts",
    "tweet_count": "post_count",
    "tweets": "posts",
}
FIELD_OBJECTS = {
    "post.fields": "Post", "user.fields": "User", "dm_event.fields": "DmEvent",
    "media.fields": "Media", "place.fields": "Place", "poll.fields": "Poll",
}
PROBLEM_PREFIXES = ("https://api.twitter.com/2/problems/", "https://api.x.com/2/problems/")
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def to_spec_names(value: Any) -> Any:
    """A wire document in the spec's vocabulary (see the module docstring)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key)
            if key == "type" and isinstance(item, str) and item.startswith(PROBLEM_PREFIXES[0]):
                item = PROBLEM_PREFIXES[1] + item[len(PROBLEM_PREFIXES[0]):]
            out[WIRE_NAMES.get(key, key)] = to_spec_names(item)
        return out
    if isinstance(value, list):
        return [to_spec_names(v) for v in value]
    return value


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    spec: dict[str, Any]
    path_params: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


class Spec:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schemas: dict[str, Any] = document["components"]["schemas"]
        self.parameters: dict[str, Any] = document["components"]["parameters"]
        # Literal segments first, so /2/users/me wins over /2/users/{id}.
        self._routes = sorted(
            ((template, _route_regex(template)) for template in document["paths"]),
            key=lambda tr: (-_literal_segments(tr[0]), tr[0]),
        )

    # --- lookup ------------------------------------------------------------------------------

    def operation(self, method: str, path: str) -> Operation | None:
        for template, regex in self._routes:
            match = regex.match(path)
            if match is None:
                continue
            op = self.document["paths"][template].get(method.lower())
            if op is not None:
                return Operation(method.upper(), template, op, match.groupdict())
        return None

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            ref = schema["$ref"]
            kind, name = ref.split("/")[-2:]
            schema = self.schemas[name] if kind == "schemas" else self.parameters[name]
        return schema

    # --- requests ----------------------------------------------------------------------------

    def check_request(
        self, method: str, path: str, query: Mapping[str, str], body: Any | None
    ) -> list[str]:
        op = self.operation(method, path)
        if op is None:
            return [f"{method} {path} is not in the X API v2 spec"]
        problems: list[str] = []
        params = [self.resolve(p) for p in op.spec.get("parameters", [])]
        by_place = {(p["in"], p["name"]): p for p in params}
        for name, value in op.path_params.items():
            param = by_place.get(("path", name))
            if param is not None:
                problems += self._check_param(param, value, op.name)
        for raw_name, value in query.items():
            name = WIRE_PARAMS.get(raw_name, raw_name)
            param = by_place.get(("query", name))
            if param is None:
                problems.append(f"{op.name}: unknown query parameter {raw_name!r}")
                continue
            problems += self._check_param(param, value, op.name)
        for (place, name), param in by_place.items():
            wire = {v: k for k, v in WIRE_PARAMS.items()}.get(name, name)
            if param.get("required") and place == "query" and name not in query and (
                    wire not in query):
                problems.append(f"{op.name}: missing required query parameter {name!r}")
        request_body = op.spec.get("requestBody")
        if request_body is not None:
            if body is None:
                if request_body.get("required"):
                    problems.append(f"{op.name}: the request needs a JSON body")
            else:
                schema = request_body["content"]["application/json"]["schema"]
                problems += self.validate(body, schema, f"{op.name} body")
        elif body is not None:
            problems.append(f"{op.name} takes no body")
        return problems

    def _check_param(self, param: dict[str, Any], value: str, where: str) -> list[str]:
        schema = self.resolve(param.get("schema", {}))
        at = f"{where} {param['name']}"
        if schema.get("type") == "array":
            items = [v for v in value.split(",")]
            if "" in items:
                return [f"{at}: empty item in {value!r}"]
            item_schema = self.resolve(schema.get("items", {}))
            problems: list[str] = []
            if len(items) < schema.get("minItems", 0):
                problems.append(f"{at}: fewer than {schema['minItems']} item(s)")
            if schema.get("uniqueItems") and len(set(items)) != len(items):
                problems.append(f"{at}: repeated items")
            own = self._object_fields(param["name"])
            for item in items:
                spec_item = WIRE_VALUES.get(item, item)
                if "enum" in item_schema and (spec_item in item_schema["enum"] or spec_item in own):
                    continue
                problems += self.validate(spec_item, item_schema, at)
            return problems
        if schema.get("type") == "integer":
            try:
                number: Any = int(value)
            except ValueError:
                return [f"{at}: {value!r} is not an integer"]
            return self.validate(number, schema, at)
        return self.validate(value, schema, at)

    def _object_fields(self, param_name: str) -> set[str]:
        obj = FIELD_OBJECTS.get(param_name)
        if obj is None:
            return set()
        return set(self.schemas[obj].get("properties", {}))

    # --- responses ---------------------------------------------------------------------------

    def check_response(
        self, method: str, path: str, status: int, body: Any, content_type: str
    ) -> list[str]:
        op = self.operation(method, path)
        if op is None:
            return [f"{method} {path} is not in the X API v2 spec"]
        responses = op.spec["responses"]
        where = f"{op.name} -> {status}"
        if status >= 400:
            return self._check_problem(body, status, where)
        declared = responses.get(str(status))
        if declared is None:
            return [f"{where}: the spec declares no {status} for this operation"]
        content = declared.get("content", {})
        if "application/json" not in content:
            return [] if body is None else [f"{where}: the spec declares no body"]
        if not content_type.startswith("application/json"):
            return [f"{where}: content-type {content_type!r}, not application/json"]
        return self.validate(to_spec_names(body), content["application/json"]["schema"], where)

    def _check_problem(self, body: Any, status: int, where: str) -> list[str]:
        """Errors: an X problem of the spec, or the RFC 7807 `about:blank` problem X sends
        for 401, 403, 429 and 5xx (which the spec's Problem type leaves out)."""
        if not isinstance(body, dict):
            return [f"{where}: an error body must be a JSON object"]
        if body.get("type") == "about:blank":
            problems = []
            for key, kind in (("title", str), ("detail", str), ("status", int)):
                if not isinstance(body.get(key), kind):
                    problems.append(f"{where}: an about:blank problem needs {key}")
            if body.get("status") != status:
                problems.append(f"{where}: problem status {body.get('status')} != {status}")
            return problems
        mapping = self.schemas["Problem"]["discriminator"]["mapping"]
        spec_body = to_spec_names(body)
        if spec_body.get("type") in mapping:
            return self.validate(spec_body, {"$ref": "#/components/schemas/Problem"}, where)
        # A problem type the spec doesn't list (unsupported-authentication, credits, ...):
        # the RFC 7807 shape every X problem has.
        return [f"{where}: a problem needs {key}" for key in ("title", "detail", "type")
                if not isinstance(body.get(key), str)]

    # --- the schema checker ------------------------------------------------------------------

    def validate(self, value: Any, schema: dict[str, Any], where: str) -> list[str]:
        schema = self.resolve(schema)
        if value is None:
            return [] if schema.get("nullable") else [f"{where}: null is not allowed"]
        problems: list[str] = []
        for sub in schema.get("allOf", []):
            problems += self.validate(value, sub, where)
        if "oneOf" in schema:
            problems += self._one_of(value, schema, where)
        if "anyOf" in schema and not any(
                not self.validate(value, sub, where) for sub in schema["anyOf"]):
            problems.append(f"{where}: matches none of anyOf")
        kind = schema.get("type")
        if kind is not None and not _is_type(value, kind):
            return [*problems, f"{where}: {type(value).__name__} is not {kind}"]
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{where}: {value!r} not in {schema['enum'][:8]}")
        if isinstance(value, str):
            problems += _string_checks(value, schema, where)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                problems.append(f"{where}: {value} < {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                problems.append(f"{where}: {value} > {schema['maximum']}")
        elif isinstance(value, list):
            if len(value) < schema.get("minItems", 0):
                problems.append(f"{where}: fewer than {schema['minItems']} item(s)")
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                problems.append(f"{where}: more than {schema['maxItems']} item(s)")
            if "items" in schema:
                for i, item in enumerate(value):
                    problems += self.validate(item, schema["items"], f"{where}[{i}]")
        elif isinstance(value, dict):
            problems += self._object(value, schema, where)
        return problems

    def _object(self, value: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
        problems = [f"{where}: missing {key!r}" for key in schema.get("required", [])
                    if key not in value]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                problems += self.validate(item, properties[key], f"{where}.{key}")
            elif extra is False:
                problems.append(f"{where}: unknown property {key!r}")
            elif isinstance(extra, dict):
                problems += self.validate(item, extra, f"{where}.{key}")
        return problems

    def _one_of(self, value: Any, schema: dict[str, Any], where: str) -> list[str]:
        discriminator = schema.get("discriminator")
        if discriminator and isinstance(value, dict):
            tag = value.get(discriminator["propertyName"])
            target = discriminator.get("mapping", {}).get(tag)
            if target is None:
                return [f"{where}: {tag!r} is none of the discriminator's types"]
            return self.validate(value, {"$ref": target}, where)
        matches = sum(1 for sub in schema["oneOf"] if not self.validate(value, sub, where))
        return [] if matches == 1 else [f"{where}: matches {matches} of oneOf, not 1"]


def _string_checks(value: str, schema: dict[str, Any], where: str) -> list[str]:
    problems = []
    if len(value) < schema.get("minLength", 0):
        problems.append(f"{where}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.append(f"{where}: longer than {schema['maxLength']}")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        problems.append(f"{where}: {value[:40]!r} does not match {schema['pattern']}")
    if schema.get("format") == "date-time" and not DATE_TIME.match(value):
        problems.append(f"{where}: {value!r} is not an RFC 3339 date-time")
    return problems


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _route_regex(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return re.compile(f"^{pattern}$")


def _literal_segments(template: str) -> int:
    return sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))


def load_spec(path: Path = OPENAPI_JSON) -> Spec:
    return Spec(json.loads(path.read_text(encoding="utf-8")))
