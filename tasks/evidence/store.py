"""MLflow as the evidence store: logging, reading back as ``Cited`` values, verification.

Layout: one experiment per mission, a parent run per cycle, a child run per
action, and a grandchild run per model under the actions that work per model.
Everything goes through ``MlflowClient`` with explicit run ids, so no global
"active run" state leaks between Prefect tasks or threads.
"""
from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tasks.evidence import schema
from tasks.evidence.cited import CITATION, Cited, expected_claims
from tasks.runtime.paths import home, tracking_uri  # noqa: F401 - tracking_uri is part of this module's API
from tasks.runtime.redaction import redact

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
ROOT_TAG = schema.ROOT  # trees logged before runs carried it are read node by node
# The outcomes an action or a model run ends with (its ``schema.STATUS`` tag); Blocked is an outcome, not a failure.
COMPLETED, BLOCKED, FAILED = "Completed", "Blocked", "Failed"


_READY: set[str] = set()


def client() -> MlflowClient:
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and uri not in _READY:
        _first_use(uri)
    return MlflowClient(tracking_uri=uri)


def _first_use(uri: str) -> None:
    """Create and migrate a SQLite store one process at a time.

    MLflow builds the schema of a fresh SQLite store on its first use; two
    cycles started at once on a new store both try, and the loser sees a
    half-made schema ("not reachable"). An exclusive lock file beside the
    database serialises that first use across processes and threads.
    """
    import fcntl

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _READY.add(uri)


def ensure_experiment(name: str) -> str:
    from mlflow.exceptions import MlflowException

    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get("mlflow.experimentKind") is None:  # made by an older version: open it on its runs too
            for key, value in EXPERIMENT_TAGS.items():
                c.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    artifacts = None
    if tracking_uri().startswith("sqlite:"):
        artifacts = (home() / "artifacts").as_uri()
    try:
        return c.create_experiment(name, artifact_location=artifacts, tags=EXPERIMENT_TAGS)
    except MlflowException:  # another cycle created it a moment ago: use theirs
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# MLflow 3's UI opens an experiment by its kind: this one is a table of runs, not a GenAI traces overview.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


# MLflow's log_batch limits: 1000 values in all, of which at most 100 params and 100 tags.
_LIMITS = {"metrics": 1000, "params": 100, "tags": 100, "all": 1000}


@dataclass
class RunLog:
    """Logging bound to one MLflow run (``name``, where known, saves a read when the status goes into it)."""

    run_id: str
    name: str | None = None

    def log(self, metrics: Mapping[str, float | int | bool] | None = None, params: Mapping[str, object] | None = None,
            tags: Mapping[str, object] | None = None) -> None:
        """Metrics, params and tags in as few ``log_batch`` calls as MLflow's limits allow (one for a stage's write)."""
        ts = _now_ms()
        items = ([("metrics", Metric(k, float(v), ts, 0)) for k, v in (metrics or {}).items() if v is not None]
                 + [("params", Param(k, redact(str(v)))) for k, v in (params or {}).items()]
                 + [("tags", RunTag(k, redact(str(v)))) for k, v in (tags or {}).items()])
        batch: dict[str, list] = {"metrics": [], "params": [], "tags": []}
        for kind, item in items:
            if len(batch[kind]) == _LIMITS[kind] or sum(map(len, batch.values())) == _LIMITS["all"]:
                client().log_batch(self.run_id, **batch)
                batch = {"metrics": [], "params": [], "tags": []}
            batch[kind].append(item)
        if items:
            client().log_batch(self.run_id, **batch)

    def metrics(self, values: Mapping[str, float | int | bool]) -> None:
        self.log(metrics=values)

    def params(self, values: Mapping[str, object]) -> None:
        self.log(params=values)

    def tags(self, values: Mapping[str, object]) -> None:
        self.log(tags=values)

    def artifact(self, path: Path, artifact_path: str | None = None) -> str:
        client().log_artifact(self.run_id, str(path), artifact_path)
        return f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name

    def table(self, df: pd.DataFrame, name: str) -> str:
        """Log a per-sample table as CSV; returns its artifact path."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            df.to_csv(path, index=False)
            return self.artifact(path, "tables")

    def named(self, status: str) -> dict[str, str]:
        """The run-name tag that appends a status (``open clip-vit-b-32 · Blocked``): MLflow's runs table shows it."""
        name = self.name if self.name is not None else client().get_run(self.run_id).info.run_name or ""
        return {RUN_NAME: f"{name.split(' · ')[0]} · {status}"}

    def finish(self, status: str = "FINISHED") -> None:
        client().set_terminated(self.run_id, status)


def start_run(experiment_id: str, name: str, parent: str | None = None, tags: Mapping[str, object] | None = None,
              root: str | None = None) -> RunLog:
    """A new run. Every run of a tree carries its root's id, so the tree reads in one search: a caller that knows the
    root passes it, else it is read from the parent (whose tree, if logged before the tag, stays without it)."""
    all_tags = {k: redact(str(v)) for k, v in (tags or {}).items()}
    c = client()
    if parent:
        root = root or c.get_run(parent).data.tags.get(ROOT_TAG)
        all_tags |= {PARENT_TAG: parent} | ({ROOT_TAG: root} if root else {})
    run = c.create_run(experiment_id, run_name=name, tags=all_tags)
    if not parent:
        c.set_tag(run.info.run_id, ROOT_TAG, run.info.run_id)
    return RunLog(run.info.run_id, name)


def read_table(run_id: str, name: str) -> pd.DataFrame:
    """A table logged with ``RunLog.table``, read back from the evidence store (any machine)."""
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(run_id=run_id, artifact_path=f"tables/{name}", dst_path=tmp, tracking_uri=tracking_uri())
        return pd.read_csv(path, keep_default_na=True)


def fetch_artifacts(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Copy a run's artifact folder to ``dst`` (plots drawn on another worker machine)."""
    from mlflow.artifacts import download_artifacts

    dst.mkdir(parents=True, exist_ok=True)
    return Path(download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst), tracking_uri=tracking_uri()))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


# ---------------------------------------------------------------- reading back


@dataclass
class RunEvidence:
    """One run as read from MLflow: numbers wrapped as ``Cited`` so templates cannot drop the citation."""

    run_id: str
    name: str
    status: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, Cited]
    children: list[RunEvidence] = field(default_factory=list)

    def m(self, key: str) -> Cited | None:
        return self.metrics.get(key)

    def p(self, key: str) -> Cited | None:
        if key not in self.params:
            return None
        raw = self.params[key]
        try:
            value: float | int | str = int(raw) if re.fullmatch(r"-?\d+", raw) else float(raw)
        except ValueError:
            value = raw
        return Cited(value, self.run_id, key, "param")

    def t(self, key: str) -> Cited | None:
        """A tag as a cited word claim (the decision, a status)."""
        return Cited(self.tags[key], self.run_id, key, "tag") if key in self.tags else None

    def child(self, tag: str, value: str) -> RunEvidence | None:
        return next((c for c in self.children if c.tags.get(tag) == value), None)

    def metric_values(self) -> dict[str, float]:
        return {k: float(c.value) for k, c in self.metrics.items()}


def read_run(run_id: str, with_children: bool = True) -> RunEvidence:
    c = client()
    run = c.get_run(run_id)
    if not with_children:
        return _evidence(run, _no_children)
    root = run.data.tags.get(ROOT_TAG)
    return _evidence(run, _tree(c, run.info.experiment_id, root) if root else _children_by_node(c, run.info.experiment_id))


def _no_children(run_id: str) -> list:
    return []


def _tree(c, experiment_id: str, root: str) -> Callable[[str], list]:
    """Every run under ``root`` from one search, looked up by parent."""
    by_parent: dict[str, list] = {}
    for run in _search(c, experiment_id, f"tags.`{ROOT_TAG}` = '{root}'"):
        if PARENT_TAG in run.data.tags:
            by_parent.setdefault(run.data.tags[PARENT_TAG], []).append(run)
    return lambda run_id: by_parent.get(run_id, [])


def _children_by_node(c, experiment_id: str) -> Callable[[str], list]:
    """A tree logged before runs carried their root: each node's children from a search of their own."""
    return lambda run_id: list(_search(c, experiment_id, f"tags.`{PARENT_TAG}` = '{run_id}'"))


def _search(c, experiment_id: str, filter_string: str):
    token = None
    while True:
        page = c.search_runs([experiment_id], filter_string=filter_string, max_results=5000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _evidence(run, children: Callable[[str], list]) -> RunEvidence:
    """A run as evidence; ``children`` gives a run id's child runs (search results carry their data: no get_run)."""
    ev = RunEvidence(
        run_id=run.info.run_id,
        name=run.info.run_name,
        status=run.info.status,
        start_time=run.info.start_time,
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics={k: Cited(_as_number(v), run.info.run_id, k) for k, v in run.data.metrics.items()},
    )
    ev.children = sorted((_evidence(k, children) for k in children(run.info.run_id)), key=lambda r: (r.start_time, r.name))
    return ev


def find_child(experiment_id: str, parent: str, tags: Mapping[str, str]) -> RunEvidence | None:
    """The child run of ``parent`` carrying these tags, or None."""
    match = " and ".join(f"tags.`{k}` = '{v}'" for k, v in {PARENT_TAG: parent, **tags}.items())
    c = client()
    found = c.search_runs([experiment_id], filter_string=match, max_results=1)
    return _evidence(found[0], _no_children) if found else None


def _as_number(value: float) -> float | int:
    return int(value) if not math.isnan(value) and float(value).is_integer() and abs(value) < 1e15 else value


# ---------------------------------------------------------------- verification

_CODE = re.compile(r"`[^`\n]*`")
_NUMBER = re.compile(r"(?<![\w.\-/#:^])[-−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?(?![\w\-/])", re.IGNORECASE)
# What a citation follows: a bold word claim, or a number token (anything a tamperer could put there:
# a percentage, a sign, an exponent), compared as text with the project's own formatting of the logged value.
_WORD_BEFORE = re.compile(r"\*\*(?P<claim>[^*\n]+)\*\*$")
_NUMBER_BEFORE = re.compile(r"(?P<claim>[-−+]?(?:\d[\d,]*)?\.?\d+(?:e[-+]?\d+)?%?|[-−]?(?:nan|inf))$", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    line: int
    problem: str
    text: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}: {self.text.strip()[:120]}"


def verify_markdown(text: str, runs: dict[str, RunEvidence] | None = None) -> tuple[list[Finding], int]:
    """Check a Markdown report (inline citations) against MLflow.

    Every citation must resolve to a logged metric, param or tag that the
    project's formatter prints exactly as the claim before it (``0.994`` for
    0.99412, never ``1`` or ``99.4%``; ``**GO**`` for the tag GO); every other
    number outside code spans must carry a citation. Returns (findings,
    number of citations checked). Footnotes are resolved first by the caller
    (``tasks.evidence.cited.from_footnotes``). ``runs`` keeps the runs read, so that the documents of one
    check read each cited run once.
    """
    findings: list[Finding] = []
    cache = {} if runs is None else runs
    checked = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        bare = _CODE.sub(lambda m: " " * len(m.group()), line)
        cited_spans = []
        for cm in CITATION.finditer(bare):
            checked += 1
            claim = claim_before(bare, cm.start())
            if claim is None:
                findings.append(Finding(lineno, f"citation {cm.group()} follows no number or bold claim", line))
                continue
            cited_spans.append(claim[1])
            problem = _check_citation(cm.group("run"), cm.group("key"), claim[0], cache)
            if problem:
                findings.append(Finding(lineno, problem, line))
        stripped = CITATION.sub(lambda m: " " * len(m.group()), bare)
        for nm in _NUMBER.finditer(stripped):
            if not any(a <= nm.start() and nm.end() <= b for a, b in cited_spans):
                findings.append(Finding(lineno, f"number {nm.group()} has no citation", line))
    return findings, checked


def claim_before(line: str, pos: int) -> tuple[str, tuple[int, int]] | None:
    """The claim a citation at ``pos`` follows: (shown text, its span), or None."""
    head = line[:pos].rstrip()
    m = _WORD_BEFORE.search(head) or _NUMBER_BEFORE.search(head)
    if not m:
        return None
    return m.group("claim").strip(), (m.start(), m.end())


def _check_citation(run_id: str, key: str, shown: str, cache: dict[str, RunEvidence]) -> str | None:
    try:
        run = cache.get(run_id) or read_run(run_id, with_children=False)
    except Exception:  # noqa: BLE001 - any lookup failure is a finding, not a crash
        return f"run {run_id} not found in {tracking_uri()}"
    cache[run_id] = run
    if key.startswith("params/"):
        cited = run.p(key.removeprefix("params/"))
    elif key.startswith("tags/"):
        cited = run.t(key.removeprefix("tags/"))
    else:
        cited = run.m(key)
    if cited is None:
        return f"{key} not logged in run {run_id}"
    expected = expected_claims(cited.value)
    if shown not in expected:
        return f"shows {shown} but {key} in run {run_id} is {cited.claim().strip('*')}"
    return None
