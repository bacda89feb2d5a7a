"""Resource measurement of a block (tasks/runtime/resources.py)."""
from __future__ import annotations

import time

from tasks.runtime.resources import measure


def test_measure_times_the_block():
    with measure(interval_s=0.01) as usage:
        time.sleep(0.05)
    assert usage.wall_s >= 0.05 and usage.peak_rss_mb > 0
