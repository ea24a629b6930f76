"""`careloop nlu parse` streams; `careloop nlu eval` prints figures; bad input exits 2."""

from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from config.nlu_cli import add_nlu_commands, score

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "nlu_dev"
RUN_CLI = (
    "import argparse, sys; from config.nlu_cli import add_nlu_commands; "
    "p = argparse.ArgumentParser(prog='careloop'); s = p.add_subparsers(dest='c', required=True); "
    "add_nlu_commands(s); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="careloop")
    add_nlu_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def _spawn(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CARELOOP_NLU_BACKEND": "embedded", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, *argv],
        cwd=ROOT, env=env, text=True, encoding="utf-8",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def test_parse_streams_one_line_per_input(cache: Path) -> None:
    proc = _spawn("nlu", "parse")
    assert proc.stdin and proc.stdout
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    try:
        # Each answer must arrive while stdin is still open: the command streams.
        proc.stdin.write(json.dumps({"text": "I was charged twice for order 123-4567"}) + "\n")
        proc.stdin.flush()
        first = json.loads(lines.get(timeout=60))
        assert first["intent"]["name"] == "complaint"
        assert first["category"]["name"] == "billing"
        assert first["entities"][0] == {
            "entity": "order_id", "value": "123-4567", "start": 30, "end": 38
        }
        proc.stdin.write("\n")  # blank lines are skipped
        proc.stdin.write(json.dumps({"text": "我的投诉CL-123怎么样了", "id": 7}) + "\n")
        proc.stdin.flush()
        second = json.loads(lines.get(timeout=30))
        assert second["language"] == "zh"
        assert second["intent"]["name"] == "check_status"
        assert second["text"] == "我的投诉CL-123怎么样了"
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()


def test_parse_bad_line_exits_2_with_one_line(cache: Path) -> None:
    proc = _spawn("nlu", "parse")
    out, err = proc.communicate('{"text": "hi"}\nnot json\n{"text": "never reached"}\n', 60)
    assert proc.returncode == 2
    assert len(out.strip().splitlines()) == 1
    assert len(err.strip().splitlines()) == 1
    assert "line 2" in err


@pytest.mark.parametrize("line", ['{"txt": "x"}', '["a"]', '{"text": 5}'])
def test_parse_rejects_wrong_shapes(cache: Path, line: str) -> None:
    proc = _spawn("nlu", "parse")
    _, err = proc.communicate(line + "\n", 60)
    assert proc.returncode == 2
    assert '"text"' in err


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["message", "label"])
        w.writerows(rows)
    return path


ROWS = [
    ("hello there", "greet"),
    ("please get me a human agent", "request_human"),
    ("my parcel never arrived", "complaint"),
    ("你们的服务太棒了，谢谢", "praise"),
    ("what's the weather in Rome", "out_of_scope"),
]


def test_eval_prints_a_table(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _csv(tmp_path / "d.csv", ROWS)
    args = _cli("nlu", "eval", "--data", str(data), "--text-col", "message", "--label-col", "label")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "macro-F1" in out
    assert "precision" in out and "recall" in out
    for _, label in ROWS:
        assert label in out


def test_eval_json(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _csv(tmp_path / "d.csv", ROWS)
    args = _cli(
        "nlu", "eval", "--data", str(data), "--text-col", "message", "--label-col", "label",
        "--json",
    )
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == len(ROWS)
    assert 0.6 <= result["accuracy"] <= 1.0
    assert set(result["labels"]["greet"]) == {"precision", "recall", "f1", "support"}


def test_eval_with_a_json_mapping_file(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _csv(tmp_path / "d.csv", [("I love it", "1"), ("awful, broken, useless", "0")])
    mapping = tmp_path / "m.json"
    gold = {"1": "positive", "0": "negative"}
    mapping.write_text(json.dumps({"field": "sentiment", "gold": gold}))
    args = _cli(
        "nlu", "eval", "--data", str(data), "--text-col", "message", "--label-col", "label",
        "--map", str(mapping), "--json",
    )
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0


@pytest.mark.parametrize(
    "extra",
    [
        ["--data", "/nonexistent.csv", "--text-col", "message", "--label-col", "label"],
        ["--text-col", "nope", "--label-col", "label"],
        ["--text-col", "message", "--label-col", "label", "--map", "no_such_mapping"],
        ["--text-col", "message", "--label-col", "label", "--limit", "0"],
    ],
)
def test_eval_bad_usage_exits_2(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    data = _csv(tmp_path / "d.csv", ROWS)
    argv = ["nlu", "eval", *([] if "--data" in extra else ["--data", str(data)]), *extra]
    args = _cli(*argv)
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1


def test_score() -> None:
    s = score(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert s.accuracy == 0.75
    assert s.per_label["a"]["precision"] == 1.0
    assert s.per_label["a"]["recall"] == 0.5
    assert s.per_label["b"]["precision"] == pytest.approx(2 / 3)
    assert s.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)


def test_eval_builtin_mapping_on_shared_data(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = SHARED / "clinc150_train_val.csv"
    if not data.is_file():
        pytest.skip(f"shared dev data not present at {SHARED}")
    args = _cli(
        "nlu", "eval", "--data", str(data), "--text-col", "text", "--label-col", "intent",
        "--map", "clinc_oos", "--limit", "300", "--json",
    )
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 300
    assert "in_scope" in result["labels"]
