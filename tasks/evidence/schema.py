"""Every name the evidence is filed under: the MLflow tags, and the metric and param keys one place writes and another reads.

A stage writes a key through a builder here and a reader (planner, reports,
the logged decision) parses it back through the same builder, so the two
cannot drift apart. Keys written and read in one place only stay there.
"""
from __future__ import annotations

# ------------------------------------------------------------------ experiments

CALIBRATION_EXPERIMENT = "fusionaudit-calibration"  # `fusionaudit calibrate` logs here; the statistics stage reads it

# ------------------------------------------------------------------ tags: what a run is

KIND = "fa.kind"                      # cycle, action, model, quality, training, calibration, calibration-model
MISSION = "fa.mission"
MISSION_KIND = "fa.mission_kind"      # training, probing (a Week-1 cycle has none)
CYCLE_ID = "fa.cycle_id"
CYCLE_NUMBER = "fa.cycle_number"
PREVIOUS_CYCLE_RUN = "fa.previous_cycle_run"
ESCALATED = "fa.escalated"            # actions the planner escalated, comma-separated
ACTION_ID = "fa.action_id"
TITLE = "fa.title"
PRIORITY = "fa.priority"
OWNER = "fa.owner"
MODEL = "fa.model"
CONFIG = "fa.config"                  # a training run's configuration
VARIANT = "fa.variant"                # a calibration zoo model's planted variant
SEED = "fa.seed"

# ------------------------------------------------------------------ tags: how a run ended

STATUS = "fa.status"                  # Completed, Blocked, Failed (tasks.evidence), or Killed
FINAL_STATUS = "fa.final_status"      # the status after the quality review's acceptance criteria
REASON = "fa.reason"
MITIGATION = "fa.mitigation"

# ------------------------------------------------------------------ tags: the process that owns a cycle run

HOST = "fa.host"
PID = "fa.pid"
PID_STARTED = "fa.pid_started"

# ------------------------------------------------------------------ tags: an opened model

FAMILY = "fa.family"
CAPABILITIES = "fa.capabilities"
RANDOM_INIT = "fa.random_init"
REVISION = "fa.revision"
CALIBRATION = "fa.calibration"        # a calibration zoo model (true/false)
SEARCHED = "fa.searched"              # where missing weights were looked for
FETCH = "fa.fetch"                    # the command that fetches them
CACHED = "fa.cached"                  # diagnostics, a training or an extraction reused from cache
ROLE = "fa.role"                      # subject, calibration, random-init

# ------------------------------------------------------------------ tags: decisions and verdicts

DECISION = "fa.decision"
RULE = "fa.rule"
TESTED_MODELS = "fa.tested"
COLLAPSED_MODELS = "fa.collapsed"
EXCLUDED_MODELS = "fa.excluded"
BLOCKED_MODELS = "fa.blocked"
CONTROLS_FAILED = "fa.controls_failed"
TRUSTWORTHY = "fa.trustworthy"
SELECTED_MODELS = "fa.selected"       # a probing cycle's selection
ROLES = "fa.roles"                    # a probing cycle's model=role list
CALL = "fa.call"                      # a model's call, copied onto its diagnostics run
VERDICT = "fa.verdict"                # a model's verdict, or the quality officer's VERIFIED / NOT VERIFIED
NARRATIVE = "fa.narrative"
REPORT = "fa.report"
EVIDENCE_STRENGTH = "fa.evidence_strength"
STRENGTH_REASON = "fa.strength_reason"
BLOCKER = "fa.blocker"
NEXT_ACTION = "fa.next_action"

_FAILURES = "fa.failures/"
_VARIANT_DECISION = "fa.decision."


def failures_tag(action_id: str) -> str:
    """The cycle tag counting an action's consecutive failed cycles (the planner escalates on it)."""
    return _FAILURES + action_id


def variant_decision_tag(variant: str) -> str:
    """A training variant's ADOPT / PARTIAL / ROLLBACK, tagged on the comparison run."""
    return _VARIANT_DECISION + variant


def variant_decisions(tags: dict[str, str]) -> dict[str, str]:
    """Variant → decision, parsed back from the comparison run's tags."""
    return {k.removeprefix(_VARIANT_DECISION): v for k, v in tags.items() if k.startswith(_VARIANT_DECISION)}


# ------------------------------------------------------------------ keys of the statistics run (Week-1)

def model_key(model: str, *parts: str) -> str:
    """A model's metric or param on the statistics run: ``<model>/verdict/p_holm``, ``<model>/role``; ending in
    ``""`` gives the prefix (``model_key(m, "verdict", "")`` → ``<model>/verdict/``)."""
    return "/".join((model, *parts))


def analysed_models(metric_keys, metric: str) -> list[str]:
    """The models whose ``metric`` the statistics run summarised, parsed back from its metric keys, sorted."""
    return sorted({k.split("/", 1)[0] for k in metric_keys if k.endswith(f"/{metric}/n")})


def call_key(model: str, label: str) -> str:
    """The 0/1 metric of one call word: ``per-sample dominance`` → ``<model>/call/per_sample_dominance``."""
    return model_key(model, "call", label.replace("-", "_").replace(" ", "_"))


def pair_key(a: str, b: str, field: str = "") -> str:
    """A pairwise comparison's metric (``field=""``: the pair's prefix)."""
    return f"pairs/{a}_vs_{b}/{field}"


def pairs_logged(metric_keys) -> list[tuple[str, str]]:
    """The (a, b) pairs whose comparisons a statistics run logged, sorted."""
    names = sorted({k.split("/")[1] for k in metric_keys if k.startswith("pairs/")})
    return [tuple(n.split("_vs_", 1)) for n in names]


def calibration_key(metric: str, field: str) -> str:
    """The calibration evidence copied onto the statistics run: does ``metric`` separate the zoo."""
    return f"calibration/{metric}/{field}"


def calibration_score_key(metric: str, field: str) -> str:
    """A metric's score on the calibration run (``separates``, ``sensitivity``, ...)."""
    return f"scores/{metric}/{field}"


# ------------------------------------------------------------------ keys of the training and probing cycles

def variant_key(variant: str, *parts: str) -> str:
    """A training variant's metric or param on the comparison run: ``<variant>/share/mean``, ``<variant>/decision``."""
    return "/".join((variant, *parts))


def seed_part(seed: int) -> str:
    """The key part of one seed's paired differences: ``variant_key(v, seed_part(0), "share_diff")``."""
    return f"seed{seed}"


def variant_seeds(metric_keys, variant: str) -> list[int]:
    """The seeds whose paired differences the comparison run logged for ``variant``, sorted."""
    return sorted(int(k.split("/")[1].removeprefix("seed")) for k in metric_keys
                  if k.startswith(variant_key(variant, "seed")) and k.endswith("/share_diff"))


def matrix_key(model: str, *parts: str) -> str:
    """A probing decision-matrix entry: ``matrix/<model>/<metric>/passed``, ``matrix/<model>/passed``."""
    return "/".join(("matrix", model, *parts))


def cka_key(a: str, b: str, debiased: bool = False) -> str:
    """Linear CKA between two probing points of one model (plain or debiased)."""
    return f"{'cka_debiased' if debiased else 'cka'}/{a}/{b}"
