"""`careloop nlu parse` and `careloop nlu eval` (CONTRACT §3)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from nlu.types import Interpreter, Parse

FIELDS = ("intent", "category", "sentiment")
_BATCH = 256


class _BadInput(Exception):
    """One clear line for stderr; the command exits 2."""


def add_nlu_commands(subparsers: Any) -> None:
    """Register `nlu parse` and `nlu eval` on the main CLI's subparsers."""
    nlu = subparsers.add_parser("nlu", help="understand customer messages")
    sub = nlu.add_subparsers(dest="nlu_command", required=True)

    parse = sub.add_parser("parse", help="JSON Lines {\"text\": ...} in, one parse per line out")
    _backend_options(parse)
    parse.set_defaults(func=cmd_parse)

    ev = sub.add_parser("eval", help="score the NLU on a labelled CSV file")
    ev.add_argument("--data", required=True, help="CSV file with a header row")
    ev.add_argument("--text-col", required=True)
    ev.add_argument("--label-col", required=True)
    ev.add_argument("--field", choices=FIELDS, default=None, help="what the labels are (intent)")
    ev.add_argument("--map", default=None, help="label mapping: built-in name or JSON file")
    ev.add_argument("--limit", type=int, default=None, help="score only the first N rows")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _backend_options(ev)
    ev.set_defaults(func=cmd_eval)


def _backend_options(p: argparse.ArgumentParser) -> None:
    # Unset: the settings decide (CARELOOP_NLU_BACKEND / CARELOOP_RASA_URL, then the TOML file),
    # as they do for `careloop run`.
    p.add_argument("--backend", choices=("embedded", "rasa"), default=None)
    p.add_argument("--rasa-url", default=None)


def _interpreter(args: argparse.Namespace) -> Interpreter:
    from config.settings import load_settings
    from nlu.factory import make_interpreter

    backend, url = args.backend, args.rasa_url
    if backend is None or url is None:
        settings = load_settings(getattr(args, "config", None))
        backend, url = backend or settings.nlu_backend, url or settings.rasa_url
    args.backend = backend  # eval's report names the backend it scored
    try:
        return make_interpreter(backend, url)
    except (RuntimeError, ValueError) as exc:
        raise _BadInput(str(exc)) from exc


def _fail(message: str) -> int:
    print(f"careloop nlu: {message}", file=sys.stderr, flush=True)
    return 2


# --- parse ----------------------------------------------------------------------------------


def _dumps(obj: dict[str, Any], out: TextIO) -> str:
    utf8 = (getattr(out, "encoding", None) or "utf-8").lower().replace("-", "") == "utf8"
    return json.dumps(obj, ensure_ascii=not utf8)


def _text_of(line: str, number: int) -> str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _BadInput(f"line {number}: not JSON ({exc.msg})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise _BadInput(f'line {number}: expected an object with a string "text"')
    return str(obj["text"])


def run_parse(interpreter: Interpreter, stdin: TextIO, stdout: TextIO) -> int:
    """Parse each input line as it arrives and write its parse at once (streaming)."""
    loop = asyncio.new_event_loop()
    try:
        number = 0
        while True:
            try:
                line = stdin.readline()
            except UnicodeDecodeError:
                return _fail(f"line {number + 1}: input is not UTF-8")
            if not line:
                return 0
            number += 1
            if not line.strip():
                continue  # blank lines between records are common in JSONL files
            try:
                text = _text_of(line, number)
            except _BadInput as exc:
                return _fail(str(exc))
            parse = loop.run_until_complete(interpreter.parse(text))
            stdout.write(_dumps(parse.to_dict(), stdout) + "\n")
            stdout.flush()
    except BrokenPipeError:  # `careloop nlu parse | head`: the reader left; not an error
        return 0
    finally:
        loop.run_until_complete(interpreter.close())
        loop.close()


def cmd_parse(args: argparse.Namespace) -> int:
    try:
        interpreter = _interpreter(args)
    except _BadInput as exc:
        return _fail(str(exc))
    return run_parse(interpreter, sys.stdin, sys.stdout)


# --- eval -----------------------------------------------------------------------------------


@dataclass
class Scores:
    n: int
    accuracy: float
    macro_f1: float
    per_label: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "labels": {
                k: {m: (round(v, 4) if m != "support" else int(v)) for m, v in d.items()}
                for k, d in self.per_label.items()
            },
        }


def score(gold: list[str], pred: list[str]) -> Scores:
    """Accuracy, macro-F1 over every label seen (gold or predicted) and per-label P/R/F1."""
    labels = sorted(set(gold) | set(pred))
    tp: Counter[str] = Counter()
    n_pred: Counter[str] = Counter(pred)
    n_gold: Counter[str] = Counter(gold)
    for g, p in zip(gold, pred, strict=True):
        if g == p:
            tp[g] += 1
    per: dict[str, dict[str, float]] = {}
    for label in labels:
        precision = tp[label] / n_pred[label] if n_pred[label] else 0.0
        recall = tp[label] / n_gold[label] if n_gold[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per[label] = {"precision": precision, "recall": recall, "f1": f1,
                      "support": float(n_gold[label])}
    accuracy = sum(tp.values()) / len(gold) if gold else 0.0
    macro = sum(d["f1"] for d in per.values()) / len(per) if per else 0.0
    return Scores(len(gold), accuracy, macro, per)


def predicted_label(parse: Parse, field: str) -> str:
    if field == "category":
        return parse.category.name if parse.category else "none"
    if field == "sentiment":
        return parse.sentiment.label
    return parse.intent.name


def parse_all(interpreter: Interpreter, texts: list[str]) -> list[Parse]:
    async def go() -> list[Parse]:
        out: list[Parse] = []
        try:
            for i in range(0, len(texts), _BATCH):
                out.extend(await interpreter.parse_many(texts[i : i + _BATCH]))
        finally:
            await interpreter.close()
        return out

    return asyncio.run(go())


def read_rows(path: Path, text_col: str, label_col: str) -> list[tuple[str, str]]:
    if not path.is_file():
        raise _BadInput(f"--data {path}: no such file")
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            for col, opt in ((text_col, "--text-col"), (label_col, "--label-col")):
                if col not in cols:
                    raise _BadInput(f"{opt} {col!r} is not a column of {path} ({', '.join(cols)})")
            return [(r[text_col] or "", (r[label_col] or "").strip()) for r in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _BadInput(f"--data {path}: not a readable UTF-8 CSV file ({exc})") from exc


def evaluate(
    interpreter: Interpreter,
    rows: Iterable[tuple[str, str]],
    field: str,
    map_gold: Callable[[str], str | None] = lambda s: s,
    map_pred: Callable[[str], str] = lambda s: s,
) -> Scores:
    kept = [(t, g) for t, raw in rows if (g := map_gold(raw)) is not None]
    parses = parse_all(interpreter, [t for t, _ in kept])
    gold = [g for _, g in kept]
    pred = [map_pred(predicted_label(p, field)) for p in parses]
    return score(gold, pred)


def format_table(scores: Scores, title: str = "") -> str:
    lines = [title] if title else []
    lines.append(
        f"rows {scores.n}   accuracy {scores.accuracy:.3f}   macro-F1 {scores.macro_f1:.3f}"
    )
    width = max([len("label"), *(len(k) for k in scores.per_label)])
    lines.append(f"{'label':<{width}}  precision  recall     f1  support")
    for label, d in scores.per_label.items():
        lines.append(
            f"{label:<{width}}  {d['precision']:9.3f}  {d['recall']:6.3f}  {d['f1']:5.3f}"
            f"  {int(d['support']):7d}"
        )
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        mapping = None
        if args.map:
            try:
                from bench.nlu_mappings import load_mapping
            except ImportError as exc:  # an installed wheel has no bench/: only JSON files
                raise _BadInput(f"--map needs bench/nlu_mappings.py ({exc})") from exc
            try:
                mapping = load_mapping(args.map)
            except (ValueError, json.JSONDecodeError) as exc:
                raise _BadInput(str(exc)) from exc
        field = args.field or (mapping.field if mapping else "intent")
        if args.limit is not None and args.limit < 1:
            raise _BadInput("--limit must be at least 1")
        rows = read_rows(Path(args.data), args.text_col, args.label_col)[: args.limit]
        if mapping is not None:
            gold_fn: Callable[[str], str | None] = mapping.map_gold
            pred_fn: Callable[[str], str] = mapping.map_pred
            if not any(gold_fn(g) is not None for _, g in rows):
                raise _BadInput(f"--map {args.map}: no row's label is in the mapping")
        else:
            gold_fn, pred_fn = (lambda s: s or None), (lambda s: s)
        if not rows:
            raise _BadInput(f"--data {args.data}: no rows")
        interpreter = _interpreter(args)
    except _BadInput as exc:
        return _fail(str(exc))
    scores = evaluate(interpreter, rows, field, gold_fn, pred_fn)
    if args.json:
        out = {"data": str(args.data), "field": field, "backend": args.backend, **scores.to_dict()}
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print(format_table(scores, f"{args.data} ({field}, {args.backend})"))
    return 0
