"""Scores tables: the loader's error messages and a fuzz test.

The loader's messages are checked for the file, the place and the fix.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.stats.table import REQUIRED_COLUMNS, ScoresTableError, load_scores, parse_scores_csv, validate_scores

HEADER = "model,sample_id,metric,value\n"


def _write(tmp_path: Path, text: str | bytes, name: str = "scores.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


# ---------------------------------------------------------------- loading


def test_load_valid_table_ignores_extra_columns_and_strips(tmp_path):
    path = _write(tmp_path, "note,model,sample_id,metric,value\n"
                            "x, clip ,01,share,0.25\n"
                            "y,clip,02,share, 0.75 \n"
                            "\n"
                            "z,blip,01,share,1e-1\n")
    df = load_scores(path)
    assert list(df.columns) == list(REQUIRED_COLUMNS)
    assert df["model"].tolist() == ["clip", "clip", "blip"]
    assert df["sample_id"].tolist() == ["01", "02", "01"]  # ids stay text: "01" is not 1
    assert df["value"].tolist() == [0.25, 0.75, 0.1] and df["value"].dtype == np.float64


def test_utf8_bom_and_crlf_are_accepted(tmp_path):
    path = _write(tmp_path, b"\xef\xbb\xbfmodel,sample_id,metric,value\r\na,1,m,0.5\r\n")
    assert load_scores(path)["value"].tolist() == [0.5]


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", ["scores.csv", "empty", "fix:"]),
        ("   \n\n", ["empty", "fix:"]),
        ("model,sample,metric,value\na,1,m,0.5\n", ["line 1", "missing column(s) ['sample_id']", "fix:"]),
        ("Model,sample_id,metric,value\na,1,m,0.5\n", ["'Model' -> 'model'"]),
        (HEADER, ["no data rows", "fix:"]),
        (HEADER + "a,1,m,0.5\na,2,m,high\n", ["line 3 (data row 2)", "column 'value'", "'high' is not a number", "fix:"]),
        (HEADER + "a,1,m,0.5\na,2,m,\n", ["line 3", "column 'value'", "is empty"]),
        (HEADER + "a,1,m,inf\n", ["line 2", "'inf' is not finite"]),
        (HEADER + "a,1,m,NaN\na,2,m,nan\n", ["line 2", "'NaN' is not finite", "2 such row(s)"]),
        (HEADER + "a,1,m,0.5\n,2,m,0.5\n", ["line 3", "column 'model'", "empty model"]),
        (HEADER + "a,1,m,0.5\nb,1,m,0.4\na,1,m,0.6\n",
         ["line 2 (data row 1) and line 4 (data row 3)", "duplicated (model, sample_id, metric) = ('a', '1', 'm')", "fix:"]),
        (HEADER + "a,1,m,0.5,extra\n", ["not a well-formed CSV", "Expected 4 fields", "fix:"]),
        (HEADER + 'a,"1,m,0.5\n', ["not a well-formed CSV", "fix:"]),
        ("model,model,sample_id,metric,value\na,a,1,m,0.5\n", ["appear more than once", "['model']"]),
        (HEADER + "a,1,m,0.5\x00\n", ["line 2", "NUL"]),
        # a quoted field spanning two lines: the record starts on line 3
        (HEADER + 'a,1,m,0.5\na,"x\ny",m,bad\n', ["line 3 (data row 2)", "'bad' is not a number"]),
    ],
)
def test_bad_tables_name_file_place_and_fix(tmp_path, content, expected):
    path = _write(tmp_path, content)
    with pytest.raises(ScoresTableError) as info:
        load_scores(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for part in expected:
        assert part in message, (part, message)


def test_non_utf8_bytes_name_the_line_and_the_fix(tmp_path):
    path = _write(tmp_path, HEADER.encode() + b"a,1,m,0.5\nb\xe9,1,m,0.5\n")
    with pytest.raises(ScoresTableError, match=r"line 3: byte 0xe9 at offset 40 is not UTF-8; fix: save the file as UTF-8"):
        load_scores(path)


def test_missing_file_is_a_scores_table_error(tmp_path):
    with pytest.raises(ScoresTableError, match="no-such.csv: cannot read"):
        load_scores(tmp_path / "no-such.csv")
    with pytest.raises(ScoresTableError, match="cannot read"):
        load_scores(tmp_path)  # a directory


def test_validate_frame_input_names_rows_by_position():
    frame = pd.DataFrame({"model": ["a", "a"], "sample_id": [1, 2], "metric": ["m", "m"], "value": [0.5, np.nan]})
    with pytest.raises(ScoresTableError, match=r"<scores frame>: data row 2, column 'value'"):
        validate_scores(frame)
    ok = validate_scores(frame.iloc[:1])
    assert ok["sample_id"].tolist() == ["1"] and ok["value"].tolist() == [0.5]


def _check_valid(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(REQUIRED_COLUMNS) and len(df) > 0
    assert np.isfinite(df["value"].to_numpy(dtype=float)).all()
    assert not df.duplicated(subset=["model", "sample_id", "metric"]).any()
    assert (df[["model", "sample_id", "metric"]] != "").all().all()


_FUZZ_DIR = Path(tempfile.mkdtemp(prefix="scores-fuzz-"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_give_a_frame_or_a_scores_table_error(raw):
    path = _FUZZ_DIR / "fuzz.csv"
    path.write_bytes(raw)
    try:
        df = load_scores(path)
    except ScoresTableError as exc:
        assert str(exc).startswith(str(path))
    else:
        _check_valid(df)


_cell = st.one_of(
    st.sampled_from(["a", "b", "1", "0.5", "nan", "inf", "", " ", '"', ",", "0.25", "-1e400", "x\ny", "\r"]),
    st.text(max_size=6),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
_header = st.one_of(
    st.just(list(REQUIRED_COLUMNS)),
    st.permutations(list(REQUIRED_COLUMNS) + ["extra"]),
    st.lists(st.sampled_from(list(REQUIRED_COLUMNS) + ["x", ""]), min_size=0, max_size=6),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_header, st.lists(st.lists(_cell, min_size=0, max_size=6), max_size=6), st.sampled_from([",", ";"]))
def test_fuzz_csv_text_gives_a_frame_or_a_scores_table_error(header, rows, sep):
    text = "\n".join(sep.join(line) for line in [header, *rows]) + "\n"
    try:
        df = parse_scores_csv(text, source="fuzz")
    except ScoresTableError as exc:
        assert str(exc).startswith("fuzz: ")
    else:
        _check_valid(df)


