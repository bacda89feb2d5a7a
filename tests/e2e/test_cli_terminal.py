"""`fusionaudit cycle run` in a real terminal (a pty): the live display updates, Prefect stays quiet, the table ends it."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _run_in_pty(args: list[str], timeout: float = 900) -> str:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))  # 160 columns: one line per row
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


def test_cycle_run_shows_live_progress_then_the_models_table():
    out = _run_in_pty([str(Path(sys.executable).parent / "fusionaudit"), "cycle", "run", "--models",
                       "zoo-text-dominant,zoo-balanced,zoo-vision-dominant", "--samples", "16"])
    text = ANSI.sub("", out.replace("\r", "\n"))
    # the display redraws: the stage row is seen at several counts, with model and batch rows beneath
    stage_counts = set(re.findall(r"stage\s+.+?\s(\d+)/9\b", text))
    assert len(stage_counts) >= 4, stage_counts
    assert "T4 diagnostics" in text and re.search(r"model\s+diagnose zoo-balanced", text)
    assert re.search(r"batch\s+zoo-\S+: samples.*\b16/16\b", text) and "ETA" in text
    assert "| INFO    |" not in text, "Prefect's log lines stay out of the terminal without --verbose"
    table = text[text.index("models of this cycle"):]
    for header in ("model", "status", "share", "CI95", "verdict"):
        assert header in table
    assert "zoo-text-dominant" in table and "Handoff:" in table and "Decision:" in table
