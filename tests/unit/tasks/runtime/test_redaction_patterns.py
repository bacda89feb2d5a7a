"""Redaction by value pattern and by name, and at the one place strings enter the evidence store."""
from __future__ import annotations

import pytest

from tasks import evidence
from tasks.runtime.redaction import redact


@pytest.mark.parametrize("text, expected", [
    ("http://h:8000/v1?api_key=abc123", "http://h:8000/v1?api_key=***"),
    ("http://h/v1?model=x&API_KEY=abc123#frag", "http://h/v1?model=***&API_KEY=***#frag"),
    ("https://tok3n@git.example/repo", "https://***@git.example/repo"),
    ("https://u:pw@host/x", "https://u:***@host/x"),
    ("api_key=abc123 and Token: zzz and client_secret='s3'", "api_key=*** and Token: *** and client_secret='***'"),
    ('{"password": "hunter2", "x-auth": "q"}', '{"password": "***", "x-auth": "***"}'),
    ("ApiKey=K1 SECRET_KEY=K2 passwd=K3", "ApiKey=*** SECRET_KEY=*** passwd=***"),
    ("author: Li; max_tokens=5; tokenizer=bert", "author: Li; max_tokens=5; tokenizer=bert"),
])
def test_secrets_are_masked_by_pattern_in_any_case(text, expected):
    assert redact(text, environ={}) == expected


def test_every_param_and_tag_is_redacted_before_it_is_logged(monkeypatch):
    monkeypatch.setenv("FUSIONAUDIT_NARRATIVE_KEY_TOKEN", "planted-secret-value")
    run = evidence.start_run(evidence.ensure_experiment("redaction"), "r", tags={"fa.reason": "GET http://x/v1?api_key=K9"})
    run.params({"narrative_url": "http://h/v1?api_key=planted", "note": "used planted-secret-value"})
    run.tags({"fa.mitigation": "set password=hunter2"})
    logged = evidence.read_run(run.run_id, with_children=False)
    text = repr((logged.params, logged.tags))
    assert "planted-secret-value" not in text and "api_key=planted" not in text and "hunter2" not in text and "K9" not in text
    assert logged.params["narrative_url"] == "http://h/v1?api_key=***"
