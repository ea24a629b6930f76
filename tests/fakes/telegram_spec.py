"""The Bot API as Telegram publishes it (../shared/data/telegram/api.json), used to check what the
bot sends to the fake and what the fake answers, so the fake cannot drift from the real API.

Values arrive in two shapes: a JSON body keeps native types; a form-encoded (or query string)
body carries every value as a string, with objects and arrays JSON-encoded, which is what
python-telegram-bot sends. `check_params` accepts both and returns the decoded parameters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

API_JSON = Path(__file__).resolve().parents[3] / "shared" / "data" / "telegram" / "api.json"
PRIMITIVES = {"Integer", "String", "Boolean", "Float"}


class SpecViolation(ValueError):
    """What the real API would reject: the fake answers 400 and records it."""


@dataclass(frozen=True)
class Spec:
    version: str
    methods: dict[str, Any]
    types: dict[str, Any]

    def method(self, name: str) -> dict[str, Any] | None:
        return self.methods.get(name)

    def check_params(self, method: str, raw: Mapping[str, Any], *, form: bool) -> dict[str, Any]:
        """Required fields present, no unknown fields, every value of an allowed type."""
        spec = self.methods.get(method)
        if spec is None:
            raise SpecViolation(f"{method} is not a Bot API method")
        fields = {f["name"]: f for f in spec.get("fields", [])}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise SpecViolation(f"{method}: unknown parameter(s) {', '.join(unknown)}")
        missing = [n for n, f in fields.items() if f["required"] and n not in raw]
        if missing:
            raise SpecViolation(f"{method}: missing required parameter(s) {', '.join(missing)}")
        decoded: dict[str, Any] = {}
        for name, value in raw.items():
            decoded[name] = self.check_value(
                value, fields[name]["types"], f"{method}.{name}", form=form
            )
        return decoded

    def check_value(self, value: Any, types: list[str], where: str, *, form: bool) -> Any:
        problems: list[str] = []
        for type_name in types:
            try:
                return self._as_type(value, type_name, where, form=form)
            except SpecViolation as exc:
                problems.append(str(exc))
        raise SpecViolation(problems[0] if len(problems) == 1 else "; ".join(problems))

    def _as_type(self, value: Any, type_name: str, where: str, *, form: bool) -> Any:
        if type_name == "InputFile":
            # An upload arrives as a multipart part; the fake takes no uploads from this bot.
            raise SpecViolation(f"{where}: file uploads are not supported by the fake")
        if type_name.startswith("Array of "):
            inner = type_name.removeprefix("Array of ")
            items = _decoded_json(value, where) if form and isinstance(value, str) else value
            if not isinstance(items, list):
                raise SpecViolation(f"{where}: expected {type_name}")
            return [self._as_type(v, inner, f"{where}[{i}]", form=False)
                    for i, v in enumerate(items)]
        if type_name in PRIMITIVES:
            return _primitive(value, type_name, where, form=form)
        obj = _decoded_json(value, where) if form and isinstance(value, str) else value
        self.check_object(obj, type_name, where)
        return obj

    def check_object(self, obj: Any, type_name: str, where: str = "") -> None:
        """An object (an Update, a Message, an inline keyboard) against its type."""
        where = where or type_name
        spec = self.types.get(type_name)
        if spec is None:
            raise SpecViolation(f"{where}: unknown type {type_name}")
        if "subtypes" in spec:
            problems = []
            for sub in spec["subtypes"]:
                try:
                    self._as_type(obj, sub, where, form=False)
                    return
                except SpecViolation as exc:
                    problems.append(f"{sub}: {exc}")
            raise SpecViolation(f"{where}: matches no kind of {type_name} ({problems[0]})")
        if not isinstance(obj, dict):
            raise SpecViolation(f"{where}: expected a {type_name} object")
        fields = {f["name"]: f for f in spec.get("fields", [])}
        unknown = sorted(set(obj) - set(fields))
        if unknown:
            raise SpecViolation(f"{where}: unknown field(s) {', '.join(unknown)} in {type_name}")
        missing = [n for n, f in fields.items() if f["required"] and n not in obj]
        if missing:
            raise SpecViolation(f"{where}: {type_name} lacks required {', '.join(missing)}")
        for name, value in obj.items():
            self.check_value(value, fields[name]["types"], f"{where}.{name}", form=False)

    def check_result(self, method: str, result: Any) -> None:
        """What the fake answers must be what the method returns (Message, Boolean, ...)."""
        returns = self.methods[method]["returns"]
        self.check_value(result, [_return_type(r) for r in returns], f"{method}()", form=False)


def _return_type(text: str) -> str:
    # api.json spells a few returns loosely ("Boolean", "True", "Array of Update").
    return "Boolean" if text == "True" else text


def _decoded_json(value: str, where: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise SpecViolation(f"{where}: can't parse JSON value {value[:40]!r}") from None


def _primitive(value: Any, type_name: str, where: str, *, form: bool) -> Any:
    if form and isinstance(value, str):
        if type_name == "String":
            return value
        if type_name == "Integer":
            try:
                return int(value)
            except ValueError:
                raise SpecViolation(f"{where}: expected Integer, got {value[:20]!r}") from None
        if type_name == "Float":
            try:
                return float(value)
            except ValueError:
                raise SpecViolation(f"{where}: expected Float, got {value[:20]!r}") from None
        if value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise SpecViolation(f"{where}: expected Boolean, got {value[:20]!r}")
    ok = {
        "String": isinstance(value, str),
        "Integer": isinstance(value, int) and not isinstance(value, bool),
        "Float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "Boolean": isinstance(value, bool),
    }[type_name]
    if not ok:
        raise SpecViolation(f"{where}: expected {type_name}, got {type(value).__name__}")
    return value


@lru_cache(maxsize=1)
def load_spec(path: Path = API_JSON) -> Spec:
    data = json.loads(path.read_text(encoding="utf-8"))
    return Spec(version=data["version"], methods=data["methods"], types=data["types"])
