"""Start `careloop` as a real process for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def careloop_env(database_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARELOOP_")}
    env |= {
        "CARELOOP_DATABASE_URL": database_url,
        "CARELOOP_DESK_PORT": str(port),
        "CARELOOP_SLA_CHECK_SECONDS": "1",
        # Nothing in a test may reach the internet: point every platform at a dead local port.
        "CARELOOP_TELEGRAM_API_BASE": "http://127.0.0.1:9",
        "CARELOOP_X_API_BASE": "http://127.0.0.1:9",
        "PYTHONUNBUFFERED": "1",
    } | extra
    return env


def careloop(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "config.cli", *args], env=env, cwd=ROOT, input=stdin,
        capture_output=True, text=True, timeout=60,
    )


def start(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "config.cli", "run", *args], env=env, cwd=ROOT,
            stdout=out, stderr=subprocess.STDOUT,
        )


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"careloop exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("careloop did not become healthy")
