"""Secret redaction: URI passwords, secret-named variables, token formats (tasks/runtime/redaction.py)."""
from __future__ import annotations

import pytest

from tasks.runtime.redaction import redact, redacted_env


@pytest.mark.parametrize("text, expected", [
    ("postgresql://u:secret@h", "postgresql://u:***@h"),
    ("mysql+pymysql://user:p%40ss@db.example:3306/mlflow", "mysql+pymysql://user:***@db.example:3306/mlflow"),
    ("HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz12", "HF_TOKEN=***"),
    ('{"OPENAI_API_KEY": "sk-live"}', '{"OPENAI_API_KEY": "***"}'),
    ("DB_PASSWORD: hunter22", "DB_PASSWORD: ***"),
    ("token hf_abcdefghijklmnopqrstuvwxyz12 in a log", "token *** in a log"),
    ("http://mlflow.local:5000/api", "http://mlflow.local:5000/api"),  # a port is not a password
    ("MAX_TOKENS=5 TOKENIZERS_PARALLELISM=false", "MAX_TOKENS=5 TOKENIZERS_PARALLELISM=false"),
])
def test_redact_masks_tokens_and_uri_passwords(text, expected):
    assert redact(text, environ={}) == expected


def test_redact_masks_the_value_of_any_secret_variable_wherever_it_appears():
    env = {"GITHUB_TOKEN": "ghp_example_value", "MY_API_KEY": "k-123456", "HOME": "/root"}
    assert redact("cloned with ghp_example_value, key k-123456, home /root", env) == "cloned with ***, key ***, home /root"
    assert redacted_env({"HF_TOKEN": "x" * 10, "HF_HOME": "/cache", "PATH": "/bin"}) == {"HF_HOME": "/cache", "HF_TOKEN": "***"}
