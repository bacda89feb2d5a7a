"""Secrets never leave the machine: every string bound for the evidence goes through ``redact``."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping


# Environment variables whose *values* are secrets: HF_TOKEN, *_API_KEY, *_TOKEN, *PASSWORD*, *SECRET*.
SECRET_NAME = re.compile(r"^(?:HF_TOKEN|.*_API_KEY|.*_TOKEN|.*PASSWORD.*|.*SECRET.*)$", re.IGNORECASE)
# Variables worth recording (where evidence, caches and orchestration live), values redacted.
_RECORDED_ENV = re.compile(r"^(?:FUSIONAUDIT_|MLFLOW_|PREFECT_API_URL$|HF_|TRANSFORMERS_|CUDA_VISIBLE_DEVICES$|OMP_NUM_THREADS$)")
MASK = "***"
# scheme://user:password@host → the password part (user may be empty: scheme://:password@host)
_URI_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)(?P<secret>[^\s@/]+)(?=@)")
# NAME=value / NAME: value / "NAME": "value" where NAME is a secret name
_ASSIGNMENT = re.compile(r"(?P<head>\b(?P<name>[A-Za-z_][A-Za-z0-9_]*)[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^\s\"',;]+)")
# Token formats that are secret wherever they appear (Hugging Face, OpenAI-style keys)
_TOKEN_FORMATS = re.compile(r"\b(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,})\b")


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with secrets replaced by ``***``.

    Masks URI passwords (``postgresql://u:secret@h`` → ``postgresql://u:***@h``),
    values assigned to secret-named variables (``HF_TOKEN=...``), well-known
    token formats, and the literal value of every secret-named variable set in
    ``environ`` (default: ``os.environ``) wherever it appears.
    """
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if SECRET_NAME.match(name) and len(value) >= 4:  # very short values would mask ordinary words
            text = text.replace(value, MASK)
    text = _URI_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    text = _ASSIGNMENT.sub(lambda m: m["head"] + MASK if SECRET_NAME.match(m["name"]) else m.group(), text)
    return _TOKEN_FORMATS.sub(MASK, text)


def redacted_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The recorded variables (evidence/cache/orchestration locations), secret values masked."""
    env = os.environ if environ is None else environ
    return {name: MASK if SECRET_NAME.match(name) else redact(value, env)
            for name, value in sorted(env.items()) if _RECORDED_ENV.match(name)}
