"""Unit-test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An NLU model cache of the test module's own, so a test sees training and reuse happen
    and the developer's ~/.cache is never touched."""
    path = tmp_path_factory.mktemp("nlu-cache")
    old = os.environ.get("CARELOOP_NLU_CACHE")
    os.environ["CARELOOP_NLU_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("CARELOOP_NLU_CACHE", None)
    else:
        os.environ["CARELOOP_NLU_CACHE"] = old
