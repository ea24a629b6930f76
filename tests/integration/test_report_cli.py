"""`careloop report` as an operator runs it: text, json and csv, and bad dates (exit 2)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from config.cli import main
from storage.db import Store
from tests.integration.test_reports import seed_known_period

WEEK = ["--since", "2026-03-01", "--until", "2026-03-08"]


@pytest.fixture
def database(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Store:
    monkeypatch.setenv(
        "CARELOOP_DATABASE_URL", store.engine.url.render_as_string(hide_password=False)
    )
    monkeypatch.chdir(tmp_path)  # no careloop.toml of the developer's in the way
    return store


async def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    # The command runs its own event loop, as from a terminal: give it a thread of its own.
    code = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


async def test_text_report_has_aligned_tables(
    database: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed_known_period(database)
    code, out, err = await run(["report", *WEEK], capsys)
    assert (code, err) == (0, "")
    assert out.startswith("careloop report 2026-03-01 .. 2026-03-07")
    assert "Tickets 5   resolution rate 60.0%" in out
    assert "CSAT 3.25 (4 answers)" in out
    lines = out.splitlines()
    header = lines.index("Response and resolution")
    rows = lines[header + 1: header + 5]
    # Every row of the table is as wide as its header line, so the columns line up.
    assert {len(r) for r in rows} == {len(rows[0])}
    assert rows[2].split() == ["first", "response", "(minutes)", "20", "72", "4"]
    assert rows[3].split() == ["resolution", "(hours)", "4", "20", "3"]
    top = lines.index("Top categories (vs previous period)")
    assert lines[top + 3].split() == ["delivery", "2", "1", "+1", "↑"]
    assert lines[top + 4].split() == ["billing", "1", "2", "-1", "↓"]


async def test_json_is_the_api_summary(
    database: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed_known_period(database)
    code, out, _ = await run(["report", *WEEK, "--format", "json"], capsys)
    assert code == 0
    body = json.loads(out)
    assert body["tickets"]["total"] == 5
    assert body["first_response_minutes"] == {"median": 20.0, "p90": 72.0, "count": 4}
    assert body["csat"]["distribution"] == {"1": 1, "2": 0, "3": 1, "4": 1, "5": 1}
    assert body["mentions"]["flagged"] == 3


async def test_csv_is_flat_rows(database: Store, capsys: pytest.CaptureFixture[str]) -> None:
    await seed_known_period(database)
    code, out, _ = await run(["report", *WEEK, "--format", "csv"], capsys)
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["figure", "key", "value"]
    assert all(len(r) == 3 for r in rows)
    assert ["tickets.by_channel", "telegram", "2"] in rows
    assert ["volume.by_channel.telegram", "2026-03-02", "1"] in rows
    assert ["top_categories.previous", "billing", "2"] in rows
    assert ["resolution_rate", "resolution_rate", "0.6"] in rows


@pytest.mark.parametrize("argv", [
    ["report", "--since", "last week"],
    ["report", "--since", "2026-03-08", "--until", "2026-03-01"],
    ["report", "--format", "pdf"],
])
async def test_bad_input_exits_2_with_one_line(
    database: Store, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = await run(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("careloop")
