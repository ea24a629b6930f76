"""NLU figures: speed, memory and quality on the public dev sets (prints numbers, never
pass/fail). Run: .venv/bin/python -m bench.nlu [--quick | --limit N] [--batch [N]]

The embedded backend is always measured; the Rasa backend too when CARELOOP_RASA_URL (default
http://127.0.0.1:5005) answers, for a side-by-side table.
"""

from __future__ import annotations

import os

# One core: the throughput figure must not depend on how many cores BLAS finds.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import csv  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.nlu_mappings import MAPPINGS, LabelMap  # noqa: E402
from config.nlu_cli import evaluate, parse_all  # noqa: E402
from nlu.types import Interpreter, Parse  # noqa: E402

DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nlu_dev"

SAMPLE_TEXTS = [
    "I was charged twice for order 123-4567",
    "where is my complaint CL-1042?",
    "the cashier was really rude to me today 😡",
    "my parcel is 2 weeks late @careloop #fail",
    "我的快递怎么还没到，都一个星期了",
    "充电宝充电的时候冒烟了，太危险了",
    "hi",
    "what's the weather like tomorrow",
    "thanks, great service!",
    "转人工",
    "app keeps crashing when I pay",
    "订单123-4567扣了两次钱，¥200",
]


def rows_of(path: Path, text_col: str, label_col: str) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [(r[text_col] or "", (r[label_col] or "").strip()) for r in csv.DictReader(fh)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def speed(make: Callable[[], Interpreter], n_single: int, n_batch: int) -> dict[str, float]:
    async def go() -> dict[str, float]:
        interp = make()
        try:
            await interp.parse("warm up")
            lat: list[float] = []
            for i in range(n_single):
                t = time.perf_counter()
                await interp.parse(SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)])
                lat.append((time.perf_counter() - t) * 1000)
            batch = [f"{SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]} {i}" for i in range(n_batch)]
            t = time.perf_counter()
            for i in range(0, n_batch, 500):
                await interp.parse_many(batch[i : i + 500])
            elapsed = time.perf_counter() - t
        finally:
            await interp.close()
        return {
            "p50_ms": statistics.median(lat),
            "p99_ms": percentile(lat, 0.99),
            "texts_per_s": n_batch / elapsed,
        }

    return asyncio.run(go())


class MemoInterpreter:
    """Parses each distinct text once per backend: the quality figures score the same Bitext
    rows under several mappings, and a Rasa server answers ~80 texts/s, so without this a
    full-set Rasa column would parse ~70,000 texts instead of ~22,000."""

    def __init__(self, inner: Interpreter) -> None:
        self.inner = inner
        self.name = inner.name
        self._seen: dict[str, Parse] = {}

    async def parse(self, text: str) -> Parse:
        return (await self.parse_many([text]))[0]

    async def parse_many(self, texts: list[str]) -> list[Parse]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._seen]
        if missing:
            self._seen.update(zip(missing, await self.inner.parse_many(missing), strict=True))
        return [self._seen[t] for t in texts]

    def health(self) -> dict[str, Any]:
        return self.inner.health()

    async def close(self) -> None:
        await self.inner.close()  # the client reopens its session in the next event loop


def quality(make: Callable[[], Interpreter], limit: int | None) -> dict[str, Any]:
    """Every quality figure; a missing file is reported, not fatal."""
    out: dict[str, Any] = {}
    memo = MemoInterpreter(make())

    def make_memo() -> Interpreter:
        return memo

    make = make_memo

    def scored(name: str, rows: list[tuple[str, str]], m: LabelMap) -> Any:
        return evaluate(make(), _sample(rows, m, limit), m.field, m.map_gold, m.map_pred)

    bitext = DEV / "bitext_customer_service_8k_utterances.csv"
    if bitext.is_file():
        rows = rows_of(bitext, "utterance", "intent")
        # "Mapped rows": the Bitext intents bench/nlu_mappings.py maps onto our vocabulary
        # (26 of 27, incl. the retail questions); "core": the README's 8 suggested intents.
        s = scored("bitext", rows, MAPPINGS["bitext"])
        out["bitext intent acc (mapped rows)"] = s.accuracy
        out["bitext intent macro-F1 (mapped rows)"] = s.macro_f1
        s = scored("bitext_core", rows, MAPPINGS["bitext_core"])
        out["bitext intent acc (core 8 intents)"] = s.accuracy
        out["bitext intent macro-F1 (core 8 intents)"] = s.macro_f1
        # "In-scope retail": the Bitext rows whose intent our vocabulary covers.
        out["bitext retail rejected as out_of_scope (mapped)"] = _share_predicted(
            make, rows, MAPPINGS["bitext"], limit
        )
        out["bitext retail rejected as out_of_scope (core)"] = _share_predicted(
            make, rows, MAPPINGS["bitext_core"], limit
        )
        for name, label in (
            ("bitext_complaint", "mapped rows"),
            ("bitext_complaint_core", "core 8 intents"),
            ("bitext_complaint_all", "all rows"),
        ):
            c = scored(name, rows, MAPPINGS[name]).per_label["complaint"]
            out[f"bitext complaint F1 ({label})"] = c["f1"]
            out[f"bitext complaint P/R ({label})"] = f"{c['precision']:.3f}/{c['recall']:.3f}"
        out["bitext all rows rejected as out_of_scope"] = _share_predicted(
            make, rows, LabelMap("intent", {}, default="x"), limit
        )
        k = scored("bitext_category", rows, MAPPINGS["bitext_category"])
        out["bitext category acc (billing/returns/delivery)"] = k.accuracy
    else:
        print(f"skip Bitext: {bitext} not found")

    clinc = DEV / "clinc150_train_val.csv"
    if clinc.is_file():
        rows = rows_of(clinc, "text", "intent")
        oos = [r for r in rows if r[1] == "oos"]
        s = scored("clinc", oos, MAPPINGS["clinc_oos"])
        out["clinc oos recall"] = s.per_label["out_of_scope"]["recall"]
        other = [r for r in rows if r[1] != "oos" and r[0]][:: 5]
        out["clinc in-domain (bank/travel/...) rejected"] = _share_predicted(
            make, other, LabelMap("intent", {}, default="x"), limit
        )
    else:
        print(f"skip CLINC150: {clinc} not found")

    chn = DEV / "ChnSentiCorp_htl_all.csv"
    if chn.is_file():
        chn_rows = rows_of(chn, "review", "label")
        s = scored("chn", chn_rows, MAPPINGS["chnsenticorp"])
        out["ChnSentiCorp sentiment acc (neutral = wrong)"] = s.accuracy
        sample = _sample(chn_rows, MAPPINGS["chnsenticorp"], limit)
        parses = parse_all(make(), [t for t, _ in sample])
        pairs = zip(parses, sample, strict=True)
        hits = sum((p.sentiment.score >= 0) == (g == "1") for p, (_, g) in pairs)
        out["ChnSentiCorp binary acc (score >= 0 positive)"] = hits / max(1, len(sample))
    else:
        print(f"skip ChnSentiCorp: {chn} not found")

    bank = DEV / "banking77_train.csv"
    if bank.is_file():
        s = scored("banking77", rows_of(bank, "text", "category"), MAPPINGS["banking77"])
        out["banking77 category acc (9 mapped intents)"] = s.accuracy
    else:
        print(f"skip Banking77: {bank} not found")
    return out


def _sample(rows: list[tuple[str, str]], m: LabelMap, limit: int | None) -> list[tuple[str, str]]:
    """The rows the mapping keeps; with a limit, an even spread of them (files are sorted)."""
    kept = [r for r in rows if m.map_gold(r[1]) is not None]
    if limit and len(kept) > limit:
        kept = kept[:: len(kept) // limit][:limit]
    return kept


def _share_predicted(
    make: Callable[[], Interpreter], rows: list[tuple[str, str]], m: LabelMap, limit: int | None
) -> float:
    parses = parse_all(make(), [t for t, _ in _sample(rows, m, limit)])
    return sum(p.intent.name == "out_of_scope" for p in parses) / max(1, len(parses))


def embedded_training() -> dict[str, float]:
    from nlu.embedded import LinearModel, train
    from nlu.training_data import load_training_data

    data = load_training_data()
    t = time.perf_counter()
    model = train(data)
    train_s = time.perf_counter() - t
    # A second run under tracemalloc for memory (tracing slows it, so it is not timed).
    tracemalloc.start()
    train(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.npz"
        model.save(path)
        t = time.perf_counter()
        LinearModel.load(path)
        load_s = time.perf_counter() - t
        size = path.stat().st_size
    return {
        "examples": float(len(data.examples)),
        "train_s": train_s,
        "cache_load_s": load_s,
        "model_file_mb": size / 1e6,
        "train_peak_mb (tracemalloc)": peak / 1e6,
    }


def rasa_factory() -> Callable[[], Interpreter] | None:
    url = os.environ.get("CARELOOP_RASA_URL", "http://127.0.0.1:5005").rstrip("/")
    try:
        from nlu.rasa_client import RasaInterpreter
    except ImportError as exc:
        print(f"Rasa: client not importable ({exc}); Rasa column left empty")
        return None
    try:
        with urllib.request.urlopen(f"{url}/status", timeout=2) as resp:
            resp.read()
    except Exception as exc:  # any failure means: not reachable
        print(f"Rasa: not reachable at {url} ({type(exc).__name__}); Rasa column left empty")
        return None
    return lambda: RasaInterpreter(url)


def batch_texts(n: int, zh_share: float = 0.2, seed: int = 5) -> list[str]:
    """n distinct dev-set texts: Bitext customer-service utterances (English) and ChnSentiCorp
    reviews (Chinese), for timing only."""
    import random

    en = [t for t, _ in rows_of(DEV / "bitext_customer_service_8k_utterances.csv",
                                "utterance", "intent") if t.strip()]
    zh = [t for t, _ in rows_of(DEV / "ChnSentiCorp_htl_all.csv", "review", "label") if t.strip()]
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < min(n, len(set(en)) + len(set(zh))):
        out[rng.choice(zh if rng.random() < zh_share else en)] = None
    return list(out)


def batch_speed(n: int) -> None:
    """The batch path (parse_many: the batch featurised at once, one product per block) against
    parsing the same texts one at a time, in the same process on the same texts."""
    import numpy as np

    from nlu.embedded import EmbeddedInterpreter
    from nlu.enrich import clean_for_model, complete_parse

    texts = batch_texts(n)
    zh = sum(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in texts)
    print(f"batch: {len(texts):,} distinct texts ({zh / len(texts):.0%} Chinese), "
          f"{sum(map(len, texts)) / len(texts):.0f} chars on average")
    interp = EmbeddedInterpreter(preload=True)
    model = interp.load()
    assert model is not None
    interp.parse_batch(texts[:50])

    def reference(text: str) -> object:
        # The per-text scoring the batch path replaced (per-text features and product,
        # merge_ranking, complete_parse), with today's rule modules.
        cleaned = clean_for_model(text)
        ranking: list[tuple[str, float]] = []
        if cleaned.strip():
            p = model.probabilities(cleaned)
            ranking = [(model.classes[i], float(p[i])) for i in np.argsort(-p, kind="stable")]
        return complete_parse(text, ranking)

    figures: list[tuple[str, float]] = []
    for name, run in (
        ("per-text scoring loop", lambda: [reference(t) for t in texts]),
        ("parse() one at a time", lambda: [interp.parse_sync(t) for t in texts]),
        ("parse_many (batch)", lambda: asyncio.run(interp.parse_many(texts))),
    ):
        t = time.perf_counter()
        run()
        figures.append((name, len(texts) / (time.perf_counter() - t)))
    for name, rate in figures:
        print(f"  {name:<28} {rate:>8,.0f} texts/s  ({1000 / rate:.3f} ms/text)")
    print(f"  batch / per-text scoring loop: {figures[-1][1] / figures[0][1]:.1f}x; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer rows and iterations")
    ap.add_argument("--limit", type=int, default=None, metavar="N",
                    help="score at most N rows per figure (an even spread; --quick: 300)")
    ap.add_argument("--batch", type=int, nargs="?", const=5000, metavar="N",
                    help="only the batch-parse speed section, on N distinct texts (5000)")
    args = ap.parse_args(argv)
    if args.batch:
        os.environ["CARELOOP_NLU_CACHE"] = tempfile.mkdtemp(prefix="careloop-nlu-bench-")
        batch_speed(args.batch)
        return 0
    limit = args.limit if args.limit else (300 if args.quick else None)
    n_single, n_batch = (300, 2000) if args.quick else (2000, 10000)

    from nlu.embedded import EmbeddedInterpreter

    # A private cache directory: the figures include one real training run.
    os.environ["CARELOOP_NLU_CACHE"] = tempfile.mkdtemp(prefix="careloop-nlu-bench-")
    columns: dict[str, dict[str, Any]] = {}
    shared = EmbeddedInterpreter(preload=True)  # trains once into the private cache

    def embedded() -> Interpreter:
        return shared

    col: dict[str, Any] = {}
    col.update(embedded_training())
    col.update(speed(embedded, n_single, n_batch))
    col.update(quality(embedded, limit))
    col["peak RSS mb (whole run)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    columns["embedded"] = col

    rasa = rasa_factory()
    if rasa is not None:
        r: dict[str, Any] = {}
        columns["rasa"] = r
        try:
            r.update(speed(rasa, min(n_single, 300), min(n_batch, 2000)))
            r.update(quality(rasa, limit))
        except Exception as exc:  # the server went away mid-run: keep what was measured
            print(f"Rasa stopped answering during the run ({type(exc).__name__}: {exc})")

    keys: list[str] = []
    for c in columns.values():
        keys.extend(k for k in c if k not in keys)
    width = max(len(k) for k in keys)
    print(f"\n{'figure':<{width}}  " + "  ".join(f"{n:>10}" for n in columns))
    for k in keys:
        cells = []
        for c in columns.values():
            v = c.get(k)
            text = f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))
            cells.append(f"{text:>10}")
        print(f"{k:<{width}}  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
