"""The probing extraction benchmark end to end (quick sizes): its figures come back positive and finite."""
from __future__ import annotations

import math

import pytest

from benchmarks import probing_extraction_memory

pytestmark = pytest.mark.slow  # two fresh interpreters: a smoke run, not a unit test


def test_quick_run_reports_the_ratio(capsys):
    figures = probing_extraction_memory.main(["--quick"])
    assert set(figures) == {"small_peak_above_mib", "large_peak_above_mib", "ratio"}
    assert all(math.isfinite(v) and v > 0 for v in figures.values())
    assert "160 / 32" in capsys.readouterr().out
