"""Optional narrative: one paragraph written by a language model, accepted only if its numbers are evidence.

Off by default. Enabled by ``FUSIONAUDIT_NARRATIVE_URL`` (an OpenAI-compatible
base URL, e.g. ``http://127.0.0.1:8000`` or ``http://host/v1``) together with
``FUSIONAUDIT_NARRATIVE_MODEL``; ``FUSIONAUDIT_NARRATIVE_API_KEY`` is sent as a
bearer token and never logged or returned. The model receives the facts as
``<value> [run_id:key]`` (the reports' citation format) and its paragraph goes
through the same check as a report (``agents.quality_officer.check_text``):
every citation must resolve to the logged value it prints and no number may
stand without one. Anything else — disabled, unreachable, malformed answer,
an invented number — is a rejection with its reason, never an exception.
"""
from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

from tasks.runtime.redaction import redact
from agents.quality_officer import check_text
from tasks.evidence.cited import Cited

URL_ENV, MODEL_ENV, KEY_ENV = "FUSIONAUDIT_NARRATIVE_URL", "FUSIONAUDIT_NARRATIVE_MODEL", "FUSIONAUDIT_NARRATIVE_API_KEY"
TIMEOUT_S = 60.0

SYSTEM_PROMPT = (
    "You write one paragraph of a research report from the facts given. Each fact is a number followed by its "
    "citation marker in square brackets, e.g. 0.994 [run_id:key]. Rules: copy every number exactly as given and "
    "write its citation marker right after it; write no other number, date or count in digits; do not round, "
    "convert or combine numbers; put model and metric names in backticks. Answer with the paragraph only."
)


@dataclass(frozen=True)
class NarrativeResult:
    text: str | None
    rejected_reason: str | None = None

    @property
    def accepted(self) -> bool:
        return self.text is not None


def enabled() -> bool:
    return bool(os.environ.get(URL_ENV) and os.environ.get(MODEL_ENV))


def fact_line(fact: Cited) -> str:
    """``- `key`: 0.994 [run_id:key]``: the number exactly as reports print it, with its citation."""
    return f"- `{fact.key}`: {fact.formatted()} {fact.citation}"


def completions_url(base: str) -> str:
    base = base.rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def write_paragraph(prompt_facts: list[Cited], instruction: str, timeout_s: float = TIMEOUT_S) -> NarrativeResult:
    """A paragraph from the configured model, or ``text=None`` and the reason it was not accepted."""
    base, model = os.environ.get(URL_ENV, ""), os.environ.get(MODEL_ENV, "")
    if not (base and model):
        return NarrativeResult(None, f"narrative disabled: set {URL_ENV} (an OpenAI-compatible base URL) and {MODEL_ENV}")
    numeric = [f for f in prompt_facts if not isinstance(f.value, str)]
    if not numeric:
        return NarrativeResult(None, "no numeric facts given: pass the Cited values the paragraph may use")
    body = {
        "model": model, "temperature": 0,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                     {"role": "user", "content": f"{instruction}\n\nFacts:\n" + "\n".join(map(fact_line, numeric))}],
    }
    url = completions_url(base)
    try:
        answer = _post(url, body, os.environ.get(KEY_ENV), timeout_s)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        return NarrativeResult(None, redact(f"narrative service {url} failed ({type(exc).__name__}: {_why(exc)}): "
                                            f"check {URL_ENV} and that the server is running"))
    try:
        text = answer["choices"][0]["message"]["content"].strip()
    except (KeyError, IndexError, TypeError, AttributeError):
        return NarrativeResult(None, redact(f"narrative service {url} answered without choices[0].message.content: "
                                            f"not an OpenAI-compatible chat completion ({str(answer)[:200]})"))
    if not text:
        return NarrativeResult(None, "the model returned an empty paragraph")
    findings, _ = check_text(text)
    if findings:
        problems = "; ".join(f"line {f.line}: {f.problem}" for f in findings[:5])
        more = f" (and {len(findings) - 5} more)" if len(findings) > 5 else ""
        return NarrativeResult(None, f"paragraph rejected, its numbers are not all evidence: {problems}{more}")
    return NarrativeResult(text)


def _post(url: str, body: dict, api_key: str | None, timeout_s: float) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - the URL is the user's setting
        return json.loads(response.read().decode("utf-8"))


def _why(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc)
