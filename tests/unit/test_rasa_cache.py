"""nlu/rasa/build.sh keeps its cache from growing: every requirements or training-data change
makes a new venv (~2.3 GB) or model key, and only the most recently used ones are kept."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

BUILD = Path(__file__).resolve().parents[2] / "nlu" / "rasa" / "build.sh"


def _aged(path: Path, hours_ago: float) -> Path:
    when = time.time() - hours_ago * 3600
    os.utime(path, (when, when))
    return path


def _venv(cache: Path, key: str, hours_ago: float, complete: bool = True) -> Path:
    venv = cache / f"venv-rasa-{key}"
    (venv / "bin").mkdir(parents=True)
    (cache / f"venv-rasa-{key}.log").write_text("pip log")
    if complete:  # the marker's time is the venv's last use
        (venv / ".complete").touch()
        _aged(venv / ".complete", hours_ago)
    return venv


def _model(cache: Path, key: str, hours_ago: float) -> Path:
    models = cache / "models"
    models.mkdir(exist_ok=True)
    model = models / f"rasa-nlu-{key}.tar.gz"
    model.write_bytes(b"model")
    (models / f"rasa-nlu-{key}.tar.gz.log").write_text("training log")
    (models / f"rasa-nlu-{key}.tar.gz.seconds").write_text("104")
    return _aged(model, hours_ago)


def _prune(cache: Path, **keep: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CARELOOP_CACHE_DIR": str(cache), **keep}
    return subprocess.run([str(BUILD), "prune"], env=env, capture_output=True, text=True,
                          timeout=60, check=True)


def test_prune_keeps_the_recently_used_venvs_and_models_and_removes_the_rest(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    venvs = {key: _venv(cache, key, hours) for key, hours in
             (("newest", 1), ("recent", 24), ("old", 24 * 7), ("older", 24 * 30))}
    unfinished = _venv(cache, "killed", 2, complete=False)
    models = {key: _model(cache, key, hours) for key, hours in
              (("m1", 1), ("m2", 2), ("m3", 3), ("m4", 4), ("m5", 50), ("m6", 500))}
    stale_training = cache / "models" / "train.abc123"
    stale_training.mkdir()
    _aged(stale_training, 12)
    fresh_training = cache / "models" / "train.def456"  # a training run going on now
    fresh_training.mkdir()

    result = _prune(cache)

    assert sorted(p.name for p in cache.glob("venv-rasa-*") if p.is_dir()) == [
        "venv-rasa-newest", "venv-rasa-recent"]
    assert not (cache / "venv-rasa-old.log").exists()
    assert not unfinished.exists()
    assert {p.name for p in (cache / "models").glob("*.tar.gz")} == {
        f"rasa-nlu-{k}.tar.gz" for k in ("m1", "m2", "m3", "m4")}
    assert not (cache / "models" / "rasa-nlu-m6.tar.gz.log").exists()
    assert not (cache / "models" / "rasa-nlu-m5.tar.gz.seconds").exists()
    assert not stale_training.exists() and fresh_training.exists()
    assert "removing venv-rasa-older, not used lately" in result.stderr
    assert venvs["newest"].exists() and models["m1"].exists()


def test_prune_honours_the_keep_settings_and_an_empty_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _prune(cache)  # nothing there yet: no error
    for key, hours in (("a", 1), ("b", 2), ("c", 3)):
        _venv(cache, key, hours)
        _model(cache, key, hours)
    _prune(cache, CARELOOP_RASA_KEEP_VENVS="1", CARELOOP_RASA_KEEP_MODELS="3")
    assert [p.name for p in cache.glob("venv-rasa-*") if p.is_dir()] == ["venv-rasa-a"]
    assert len(list((cache / "models").glob("*.tar.gz"))) == 3
