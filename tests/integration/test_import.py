"""`careloop import mentions FILE` end to end: JSON Lines and CSV, twice, bad rows, bad files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from config.cli import main
from storage.db import Store
from storage.models import SocialPost

ROWS = [
    {"id": "1001", "text": "@acme I was charged twice for my order, refund me!",
     "author": "mei", "created_at": "2026-01-05T09:00:00Z", "followers": 120,
     "url": "https://x.com/mei/status/1001", "platform": "x"},
    {"id": "1002", "text": "RT @mei: @acme I was charged twice for my order, refund me!",
     "author": {"username": "li", "followers": 3}, "created_at": "2026-01-05T09:05:00+00:00",
     "platform": "x"},
    {"tweet_id": "1003", "full_text": "@acme thank you, lovely staff at the mall store",
     "screen_name": "@ann", "created_at": "Mon Jan 05 10:00:00 +0000 2026", "platform": "x"},
    {"id": "77", "content": "the new app is nice", "username": "bo",
     "posted_at": 1767607200},
]


async def cli(*args: str) -> int:
    # The command runs its own event loop: give it a thread, as a terminal would a process.
    return await asyncio.to_thread(main, ["import", "mentions", *args])


@pytest.fixture(autouse=True)
def database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_DATABASE_URL", db_url)


async def posts(store: Store) -> dict[str, SocialPost]:
    async with store.read() as session:
        rows = (await session.scalars(select(SocialPost))).all()
    return {f"{p.platform}:{p.external_id}": p for p in rows}


async def test_json_lines_import_goes_through_triage_and_twice_adds_nothing(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n", encoding="utf-8")
    assert await cli(str(path)) == 0
    out = capsys.readouterr().out
    assert "imported 4 mentions" in out
    rows = await posts(store)
    assert set(rows) == {"x:1001", "x:1002", "x:1003", "import:77"}
    first, copy, praise = rows["x:1001"], rows["x:1002"], rows["x:1003"]
    assert first.stream == "import" and first.url == "https://x.com/mei/status/1001"
    assert first.state == "flagged" and first.intent == "complaint"
    assert first.author_username == "mei" and first.author_followers == 120
    assert copy.group_id == first.id and first.group_size == 2
    assert copy.author_username == "li" and copy.author_followers == 3
    assert praise.state == "ignored" and praise.author_username == "ann"
    assert praise.posted_at.isoformat() == "2026-01-05T10:00:00+00:00"
    assert rows["import:77"].posted_at.isoformat() == "2026-01-05T10:00:00+00:00"

    assert await cli(str(path)) == 0
    assert "imported 0 mentions" in capsys.readouterr().out
    again = await posts(store)
    assert len(again) == 4 and again["x:1001"].group_size == 2


async def test_csv_with_bad_rows_names_the_lines_and_imports_the_rest(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "id,text,author,created_at,followers\n"
        '1,"@acme my parcel is late,\nagain",mei,2026-01-05 09:00:00,12\n'
        "2,,li,2026-01-05 09:01:00,5\n"
        "3,@acme rude cashier,ann,yesterday,5\n"
        "4,@acme great service,bo,2026-01-05T09:03:00Z,lots\n"
        "5,@acme the app logs me out,cy,2026-01-05T09:04:00Z,\n",
        encoding="utf-8",
    )
    assert await cli(str(path)) == 2
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert any("line 4" in e and "missing text" in e for e in err), err
    assert any("line 5" in e and "created_at" in e for e in err), err
    assert any("line 6" in e and "followers" in e for e in err), err
    assert "imported 2 mentions" in captured.out
    rows = await posts(store)
    assert set(rows) == {"import:1", "import:5"}
    assert rows["import:1"].text == "@acme my parcel is late,\nagain"
    assert rows["import:5"].author_followers is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"\xff\xfe\x00binary\x00\x81", "not UTF-8"),
        (b"", "is empty"),
        (b"a;b;c\n1;2;3\n", "neither JSON Lines nor CSV"),
    ],
)
async def test_unreadable_input_exits_2_with_one_line(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None,
    message: str,
) -> None:
    path = tmp_path / "export.jsonl"
    if content is not None:
        path.write_bytes(content)
    assert await cli(str(path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("careloop: ") and message in err[0], err
    assert await posts(store) == {}


async def test_malformed_json_lines_are_named(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n[1, 2]\n", encoding="utf-8")
    assert await cli(str(path)) == 2
    err = capsys.readouterr().err
    assert "line 2: not valid JSON" in err and "line 3: not a JSON object" in err
    assert set(await posts(store)) == {"x:1001"}
