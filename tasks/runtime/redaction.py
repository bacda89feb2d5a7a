"""Secrets never reach the evidence: values masked by name and by pattern, wherever they appear in a string.

Applied where strings leave the process: every MLflow param and tag
(``tasks.evidence.RunLog``), the environment snapshot, and error messages
from services. What is masked:

* the value assigned to a secret-looking name, in any case, anywhere in the
  text: ``api_key=…``, ``"Token": "…"``, ``DB_PASSWORD: …``, ``client_secret=…``
  (a name part is ``api_key``/``apikey``, ``token``, ``secret``,
  ``password``/``passwd``, ``access_key``, ``auth``, ``credential(s)``);
* in a URL: the password of the userinfo (``scheme://user:***@host``), a bare
  userinfo token (``scheme://***@host``) and every query-string value
  (``?api_key=***&x=***``): a signed or keyed URL carries its secret there;
* well-known token formats (Hugging Face ``hf_…``, OpenAI-style ``sk-…``);
* the literal value of every secret-named environment variable.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

MASK = "***"
# Variables worth recording (where evidence, caches and orchestration live), values redacted.
_RECORDED_ENV = re.compile(r"^(?:FUSIONAUDIT_|MLFLOW_|PREFECT_API_URL$|HF_|TRANSFORMERS_|CUDA_VISIBLE_DEVICES$|OMP_NUM_THREADS$)")
_PART = r"(?:api[_-]?key|apikey|token|secret|password|passwd|access[_-]?key|auth|credentials?)"
# A name is secret when one of its _/-/. separated parts is a secret word: HF_TOKEN, api_key, X-Auth, DB_PASSWORD
# (MAX_TOKENS and TOKENIZERS_PARALLELISM are not: the part must be the whole word).
SECRET_NAME = re.compile(rf"^(?:.*[_.\-])?{_PART}(?:[_.\-].*)?$", re.IGNORECASE)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]+")
_USERINFO = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^\s:/@?#]*)(?::(?P<pw>[^\s@/?#]*))?@")
_QUERY_VALUE = re.compile(r"(?P<head>[?&;][^=&;#\s]+=)(?P<value>[^&;#\s]+)")
# NAME=value / NAME: value / "NAME": "value" / name='value'
_ASSIGNMENT = re.compile(r"(?P<head>(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^\s\"',;&]+)")
_TOKEN_FORMATS = re.compile(r"\b(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,})\b")


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret replaced by ``***`` (the rules in this module's docstring)."""
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if SECRET_NAME.match(name) and len(value) >= 4:  # very short values would mask ordinary words
            text = text.replace(value, MASK)
    text = _URL.sub(lambda m: _redact_url(m.group()), text)
    text = _ASSIGNMENT.sub(lambda m: m["head"] + MASK if SECRET_NAME.match(m["name"]) and not m["secret"].startswith(MASK)
                           else m.group(), text)
    return _TOKEN_FORMATS.sub(MASK, text)


def _redact_url(url: str) -> str:
    def userinfo(m: re.Match) -> str:
        if m["pw"] is not None:
            return f"{m['scheme']}{m['user']}:{MASK}@"
        return f"{m['scheme']}{MASK}@"
    url = _USERINFO.sub(userinfo, url)
    return _QUERY_VALUE.sub(lambda m: m["head"] + MASK, url)


def redacted_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The recorded variables (evidence/cache/orchestration locations), secret values masked."""
    env = os.environ if environ is None else environ
    return {name: MASK if SECRET_NAME.match(name) else redact(value, env)
            for name, value in sorted(env.items()) if _RECORDED_ENV.match(name)}
