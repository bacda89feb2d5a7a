"""Scores tables: load and validate them.

A scores table has one row per (model, sample, metric): columns ``model``,
``sample_id``, ``metric``, ``value`` (extra columns are ignored). ``value`` is
a per-sample visual share in [0, 1] (0.5 balanced). ``load_scores`` reads a
CSV into a validated DataFrame or raises ``ScoresTableError`` naming the file,
the line/column and the fix. ``tasks.stats.analysis.analyze`` runs the
statistics of a table.
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["REQUIRED_COLUMNS", "ScoresTableError", "load_scores", "parse_scores_csv", "validate_scores"]

REQUIRED_COLUMNS = ("model", "sample_id", "metric", "value")
_NAME_COLUMNS = ("model", "sample_id", "metric")
_FIX_HEADER = (
    "the first line must name the columns model,sample_id,metric,value "
    "(lower case; extra columns are ignored)"
)


class ScoresTableError(ValueError):
    """A scores table that cannot be analysed; the message says where and how to fix it."""


def load_scores(path: str | Path) -> pd.DataFrame:
    """Read a scores CSV (UTF-8, optional BOM) into a validated DataFrame.

    Returns columns ``model``, ``sample_id``, ``metric`` (str, surrounding
    whitespace stripped) and ``value`` (float64, finite), in file order.
    Raises ``ScoresTableError`` for a missing/unreadable/empty file, bytes that
    are not UTF-8, malformed CSV, missing columns, empty names, non-numeric or
    non-finite values and duplicated (model, sample_id, metric) rows.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScoresTableError(
            f"{path}: cannot read the scores table ({exc.strerror or exc}); "
            "fix: pass the path of an existing CSV file with columns model,sample_id,metric,value"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ScoresTableError(
            f"{path}: line {line}: byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8; "
            "fix: save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    return parse_scores_csv(text, source=str(path))


def parse_scores_csv(text: str, source: str = "<text>") -> pd.DataFrame:
    """Parse CSV text (see ``load_scores``); ``source`` names it in error messages."""
    if not text.strip():
        raise ScoresTableError(
            f"{source}: the file is empty; fix: write a header line model,sample_id,metric,value "
            "and one line per (model, sample, metric) score"
        )
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ScoresTableError(
            f"{source}: line {line}: contains a NUL character (a binary file?); "
            "fix: export the scores as a plain-text CSV"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # header=None: the header is checked here (duplicates are not
            # silently renamed); index_col=False: a row with an extra field
            # is an error, not a silent shift of every column; everything is
            # read as text so that values are checked cell by cell.
            grid = pd.read_csv(
                io.StringIO(text), header=None, dtype=str, keep_default_na=False,
                na_filter=False, index_col=False, skip_blank_lines=True,
            )
    except pd.errors.EmptyDataError:
        raise ScoresTableError(
            f"{source}: no CSV content; fix: write a header line model,sample_id,metric,value and data lines"
        ) from None
    except (pd.errors.ParserError, csv.Error, ValueError, OverflowError) as exc:
        detail = " ".join(str(exc).split())
        raise ScoresTableError(
            f"{source}: not a well-formed CSV ({detail}); fix: every line needs as many comma-separated "
            "fields as the header, and a field containing a comma or quote must be quoted"
        ) from None
    header = [str(h).strip() for h in grid.iloc[0].tolist()]
    dupes = sorted({h for h in header if header.count(h) > 1 and h in REQUIRED_COLUMNS})
    if dupes:
        raise ScoresTableError(
            f"{source}: line 1: column(s) {dupes} appear more than once in the header; "
            "fix: keep one column of each name"
        )
    body = grid.iloc[1:].reset_index(drop=True)
    body.columns = header
    return validate_scores(body, source=source, lines=_record_lines(text, len(body)))


def _record_lines(text: str, n_rows: int) -> list[int] | None:
    """Physical line number of each data record, or None if it cannot be told.

    The csv module tracks line numbers (quoted fields may span lines); its
    records are matched to pandas' rows only when the counts agree.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    lines, before = [], 0
    try:
        for row in reader:
            # A record starts on the line after the previous one ended (blank
            # lines are records of their own); pandas skips blank ones.
            if row and not (len(row) == 1 and not row[0].strip()):
                lines.append(before + 1)
            before = reader.line_num
    except csv.Error:
        return None
    return lines[1:] if len(lines) == n_rows + 1 else None


def validate_scores(
    frame: pd.DataFrame, source: str = "<scores frame>", lines: list[int] | None = None
) -> pd.DataFrame:
    """Validate a scores frame and return its clean copy (see ``load_scores``).

    ``lines[i]`` is the file line of row ``i`` (for messages); without it rows
    are named by their position (data row 1 = first row after the header).
    """
    if not isinstance(frame, pd.DataFrame):
        raise ScoresTableError(f"{source}: expected a pandas DataFrame, got {type(frame).__name__}")
    columns = [str(c) for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        hints = [f"{c!r} -> {m!r}" for m in missing for c in columns if c.strip().lower() == m and c != m]
        hint = f" (rename {', '.join(hints)})" if hints else ""
        raise ScoresTableError(
            f"{source}: line 1 (header): missing column(s) {missing}; found {columns}{hint}; fix: {_FIX_HEADER}"
        )
    frame = frame.loc[:, list(REQUIRED_COLUMNS)]
    if frame.columns.duplicated().any():
        raise ScoresTableError(f"{source}: duplicated column names in {columns}; fix: keep one column of each name")
    if len(frame) == 0:
        raise ScoresTableError(
            f"{source}: the header has no data rows below it; fix: add one line per (model, sample, metric) score"
        )

    def where(i: int) -> str:
        row = f"data row {i + 1}"
        return f"line {lines[i]} ({row})" if lines is not None else row

    out: dict[str, Any] = {}
    for column in _NAME_COLUMNS:
        cells = frame[column]
        names = cells.map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip())
        empty = np.flatnonzero((names == "").to_numpy())
        if empty.size:
            i = int(empty[0])
            raise ScoresTableError(
                f"{source}: {where(i)}, column {column!r}: empty {column} "
                f"({empty.size} row(s) in all; is a field missing on that line?); fix: fill in every {column}"
            )
        out[column] = names.astype(str)

    raw_values = frame["value"]
    texts = raw_values.map(lambda v: v.strip() if isinstance(v, str) else v)
    values = _to_float(texts)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        cell = raw_values.iloc[i]
        if math.isnan(values[i]) and not _is_nan_literal(cell):
            problem = "is empty" if str(cell).strip() == "" else f"{cell!r} is not a number"
        else:
            problem = f"{cell!r} is not finite"
        raise ScoresTableError(
            f"{source}: {where(i)}, column 'value': {problem} "
            f"({bad.size} such row(s) in all); fix: write a finite decimal number such as 0.73 "
            "(drop rows whose score could not be computed)"
        )
    out["value"] = values

    clean = pd.DataFrame(out)
    dup = clean.duplicated(subset=list(_NAME_COLUMNS), keep=False).to_numpy()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        key = tuple(clean.iloc[first][list(_NAME_COLUMNS)])
        same = np.flatnonzero(
            dup & (clean["model"] == key[0]).to_numpy() & (clean["sample_id"] == key[1]).to_numpy()
            & (clean["metric"] == key[2]).to_numpy()
        )
        at = " and ".join(where(int(j)) for j in same[:2])
        raise ScoresTableError(
            f"{source}: {at}: duplicated (model, sample_id, metric) = {key}; "
            "fix: keep one score per model, sample and metric (average repeats before writing the table)"
        )
    return clean


def _is_nan_literal(cell: Any) -> bool:
    if isinstance(cell, (float, np.floating)):
        return bool(np.isnan(cell))
    return isinstance(cell, str) and cell.strip().lower().lstrip("+-") == "nan"


def _to_float(cells: pd.Series) -> np.ndarray:
    """Cells as float64, NaN where a cell is not a number (never raises)."""
    try:
        converted = pd.to_numeric(cells, errors="coerce")
        return np.asarray(converted, dtype=float)
    except (ValueError, TypeError, OverflowError):
        pass

    def one(v: Any) -> float:
        try:
            return float(v)
        except (ValueError, TypeError, OverflowError):
            return math.nan

    return np.array([one(v) for v in cells], dtype=float)
