"""The optional narrative against a real local HTTP server speaking the chat-completions protocol."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents import narrative
from agents.narrative import write_paragraph
from tasks import evidence

KEY = "sk-test-key-never-shown-0123456789"


class ChatServer:
    """Answers POST /v1/chat/completions with ``self.reply``; keeps the requests it received."""

    def __init__(self) -> None:
        self.reply = ""
        self.status = 200
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                payload = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": server.reply}}]})
                data = payload.encode() if server.status == 200 else b'{"error": "unauthorized"}'
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = ChatServer()
    yield s
    s.close()


@pytest.fixture
def configured(server, monkeypatch):
    monkeypatch.setenv(narrative.URL_ENV, server.url)
    monkeypatch.setenv(narrative.MODEL_ENV, "tiny-local")
    monkeypatch.setenv(narrative.KEY_ENV, KEY)
    server.status = 200
    return server


@pytest.fixture(scope="module")
def facts():
    exp = evidence.ensure_experiment("narrative")
    run = evidence.start_run(exp, "stats")
    run.metrics({"gates/models_tested": 3, "zoo/imbalance": 0.9876})
    ev = evidence.read_run(run.run_id, with_children=False)
    return [ev.m("gates/models_tested"), ev.m("zoo/imbalance")]


def test_a_paragraph_whose_numbers_are_all_cited_is_accepted(configured, facts):
    tested, imbalance = facts
    configured.reply = (f"We tested {tested.formatted()} {tested.citation} models; `zoo` collapsed with imbalance "
                        f"{imbalance.formatted()} {imbalance.citation}.")
    result = write_paragraph(facts, "Summarise the gate outcome.", timeout_s=10)
    assert result.accepted and result.text == configured.reply and result.rejected_reason is None
    sent = configured.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == f"Bearer {KEY}"
    assert sent["body"]["model"] == "tiny-local" and sent["body"]["temperature"] == 0
    prompt = sent["body"]["messages"][1]["content"]
    assert "Summarise the gate outcome." in prompt and f"0.988 {imbalance.citation}" in prompt


def test_an_invented_number_rejects_the_paragraph(configured, facts):
    tested = facts[0]
    configured.reply = f"We tested {tested.formatted()} {tested.citation} models and 42 of them collapsed."
    result = write_paragraph(facts, "Summarise.", timeout_s=10)
    assert result.text is None and "number 42 has no citation" in result.rejected_reason


def test_a_wrong_value_behind_a_real_citation_rejects_the_paragraph(configured, facts):
    imbalance = facts[1]
    configured.reply = f"The imbalance was 0.912 {imbalance.citation}."
    result = write_paragraph(facts, "Summarise.", timeout_s=10)
    assert result.text is None and "shows 0.912 but zoo/imbalance" in result.rejected_reason


def test_http_error_is_a_reason_without_the_key(configured, facts):
    configured.status = 401
    result = write_paragraph(facts, "Summarise.", timeout_s=10)
    assert result.text is None and "HTTP 401" in result.rejected_reason and KEY not in result.rejected_reason


def test_server_down_is_a_clear_rejection_not_an_exception(monkeypatch, facts):
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(narrative.URL_ENV, f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv(narrative.MODEL_ENV, "tiny-local")
    result = write_paragraph(facts, "Summarise.", timeout_s=5)
    assert result.text is None
    assert f"narrative service http://127.0.0.1:{port}/v1/chat/completions failed" in result.rejected_reason
    assert narrative.URL_ENV in result.rejected_reason


def test_off_by_default(monkeypatch, facts):
    monkeypatch.delenv(narrative.URL_ENV, raising=False)
    result = write_paragraph(facts, "Summarise.")
    assert result.text is None and result.rejected_reason.startswith("narrative disabled")
