"""Every name the evidence is filed under: the MLflow tags, and every metric and param key built from parts.

A stage writes a key through a builder here and a reader (planner, reports,
templates through the Jinja global ``tag``, the logged decision) builds or
parses it back through the same builder, so the two cannot drift apart. No
tag literal and no key f-string lives anywhere else (checked by
tests/unit/tasks/evidence/test_schema_owns_keys.py); a fixed key such as
``samples_scored`` stays a plain string where it is written and read.
"""
from __future__ import annotations


def _under(prefix: str):
    """A key builder: ``prefix`` and the parts joined by "/" (``_under("train")("loss")`` → ``train/loss``).

    Most keys are just that; each named builder below says which run logs it and gives an example.
    """
    def build(*parts: object) -> str:
        return "/".join((prefix, *map(str, parts)))
    build.__name__ = build.__qualname__ = f"{prefix}_key"
    return build


# ------------------------------------------------------------------ experiments

CALIBRATION_EXPERIMENT = "fusionaudit-calibration"  # `fusionaudit calibrate` logs here; the statistics stage reads it

# ------------------------------------------------------------------ tags: what a run is

KIND = "fa.kind"                      # cycle, action, model, quality, training, calibration, calibration-model
MISSION = "fa.mission"
MISSION_KIND = "fa.mission_kind"      # training, probing (a Week-1 cycle has none)
CYCLE_ID = "fa.cycle_id"
ROOT = "fa.root"                      # every run of a tree carries its root's id, so a tree reads in one search
CYCLE_NUMBER = "fa.cycle_number"
PREVIOUS_CYCLE_RUN = "fa.previous_cycle_run"
ESCALATED = "fa.escalated"            # actions the planner escalated, comma-separated
ACTION_ID = "fa.action_id"
TITLE, PRIORITY, OWNER = "fa.title", "fa.priority", "fa.owner"  # an action run's, copied from the mission's action
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
# the gate decision's model lists, each comma-separated names or "none"
TESTED_MODELS, COLLAPSED_MODELS, BLOCKED_MODELS = "fa.tested", "fa.collapsed", "fa.blocked"
EXCLUDED_MODELS, CONTROLS_FAILED = "fa.excluded", "fa.controls_failed"  # the controls (never counted), those that failed
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


# ------------------------------------------------------------------ keys of every mission kind

# An action's acceptance threshold, a param on its run: ``acceptance/models_tested``. Parts: metric.
acceptance_key = _under("acceptance")
# An environment variable in the environment snapshot (redacted): ``env/CUDA_VISIBLE_DEVICES``. Parts: name.
env_key = _under("env")


def metric_field_key(metric: str, field: str) -> str:
    """One field of a metric's estimate on a per-model run: ``mm_shap_v/ci_low`` (a zoo model's calibration run),
    ``bbox_iou/control`` (a probing point's results, then under ``probe_key``)."""
    return f"{metric}/{field}"


def mean_key(metric: str) -> str:
    """The mean of a per-sample metric: ``modality_shapley_v_mean`` on a diagnostics run (``eval_key`` on a training run)."""
    return f"{metric}_mean"


# ------------------------------------------------------------------ keys of the diagnostics and statistics runs (Week-1)

# A per-layer mean on a model's diagnostics run: ``layer/3/attn_visual_share``. Parts: index, metric.
layer_key = _under("layer")


def model_key(model: str, *parts: str) -> str:
    """A model's metric or param on the statistics run: ``<model>/verdict/p_holm``, ``<model>/role``; ending in
    ``""`` gives the prefix (``model_key(m, "verdict", "")`` → ``<model>/verdict/``)."""
    return "/".join((model, *parts))


def charted_key(model: str, key: str) -> str:
    """A model's statistic copied onto its diagnostics run for MLflow's charts: ``<model>/verdict/p`` → ``stats/verdict/p``."""
    return "stats/" + key.removeprefix(model_key(model, ""))


def analysed_models(metric_keys, metric: str) -> list[str]:
    """The models whose ``metric`` the statistics run summarised, parsed back from its metric keys, sorted."""
    return sorted({k.split("/", 1)[0] for k in metric_keys if k.endswith(f"/{metric}/n")})


def call_key(model: str, label: str) -> str:
    """The 0/1 metric of one call word: ``per-sample dominance`` → ``<model>/call/per_sample_dominance``."""
    return model_key(model, "call", label.replace("-", "_").replace(" ", "_"))


def pair_name(a: str, b: str) -> str:
    """The name of a pairwise comparison inside a key: ``<a>_vs_<b>``."""
    return f"{a}_vs_{b}"


def pair_key(a: str, b: str, field: str = "") -> str:
    """A pairwise comparison's metric (``field=""``: the pair's prefix)."""
    return f"pairs/{pair_name(a, b)}/{field}"


def pairs_logged(metric_keys) -> list[tuple[str, str]]:
    """The (a, b) pairs whose comparisons a statistics run logged, sorted."""
    names = sorted({k.split("/")[1] for k in metric_keys if k.startswith("pairs/")})
    return [tuple(n.split("_vs_", 1)) for n in names]


def analysis_key(metric: str, name: str, field: str = "") -> str:
    """The stats CLI's flat analysis, metric first (``AnalysisResult.as_dict``): ``shapley/<model>/mean``,
    ``shapley/<a>_vs_<b>/p_holm``; ``field=""`` gives the prefix."""
    return f"{metric}/{name}/{field}"


# The calibration evidence copied onto the statistics run: does ``metric`` separate the zoo. Parts: metric, field.
calibration_key = _under("calibration")


# ------------------------------------------------------------------ keys of the calibration runs (`fusionaudit calibrate`)

# A metric's score on the calibration run (``separates``, ``sensitivity``, ...). Parts: metric, field.
calibration_score_key = _under("scores")
# A zoo model's held-out accuracy on its child run: ``held_out/image_only``; ``""`` gives the prefix. Parts: check.
held_out_key = _under("held_out")
# The rank agreement of two metrics on the calibration run: ``agreement/pooled/<a>/<b>/rho``. Parts: scope, a, b,
# field.
agreement_key = _under("agreement")


def mc_key(variant: str, permutations: int, field: str) -> str:
    """MM-SHAP's Monte-Carlo error at one permutation count on the calibration run: ``mc/balanced/p8/spread``."""
    return f"mc/{variant}/p{permutations}/{field}"


# How a zoo model's MM-SHAP credit spreads over its players: ``concentration/balanced/top_image_share``. Parts:
# variant, field.
concentration_key = _under("concentration")


# ------------------------------------------------------------------ keys of the training cycles

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


# A training run's loss curve, one value per step: ``train/loss_total``. Parts: column.
train_curve_key = _under("train")
# A training run's gradient norm of one layer, one value per step: ``grad/image/embed``. Parts: pathway, layer.
grad_curve_key = _under("grad")
# A training run's gradient-flow summary of one pathway: ``gradflow/image/stall_step``. Parts: pathway, field.
gradflow_key = _under("gradflow")
# A training run's count of trainable parameters in one pathway: ``trainable/image``. Parts: pathway.
trainable_key = _under("trainable")
# A training run's re-diagnosis on the held-out samples: ``eval/accuracy``, ``eval_key(mean_key("mm_shap_v"))``.
# Parts: name.
eval_key = _under("eval")


# The checklist run's counts: ``checklist/<item>/passed_count``, ``checklist/items``.
checklist_key = _under("checklist")


# ------------------------------------------------------------------ keys of the probing cycles

# The layer a probing point reads, a param on the opened model's run: ``point/p3``. Parts: point.
point_layer_key = _under("point")
# The width of a point's pooled features on the extraction run: ``dim/p3``. Parts: point.
feature_dim_key = _under("dim")


def probe_key(point: str, metric: str) -> str:
    """A point's probe result on the probes run: ``p3/bbox_iou``, ``probe_key(p, metric_field_key("bbox_iou", "ci_low"))``."""
    return f"{point}/{metric}"


def probe_key_parts(key: str) -> tuple[str, str]:
    """(point, metric), parsed back from a ``probe_key``."""
    point, _, metric = key.partition("/")
    return point, metric


# The mission's threshold on a probe metric, logged on the decision run: ``threshold/bbox_iou``. Parts: metric.
threshold_key = _under("threshold")


def matrix_key(model: str, *parts: str) -> str:
    """A probing decision-matrix entry: ``matrix/<model>/<metric>/passed``, ``matrix/<model>/passed``."""
    return "/".join(("matrix", model, *parts))


def cka_key(a: str, b: str, debiased: bool = False) -> str:
    """Linear CKA between two probing points of one model (plain or debiased)."""
    return f"{'cka_debiased' if debiased else 'cka'}/{a}/{b}"
