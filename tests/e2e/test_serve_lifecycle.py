"""``seqtag serve``'s life: not ready before the model is loaded, limits (413), a queue
timeout (504) it survives, SIGTERM with requests in flight, and one-line errors on the command
line. Each test starts its own server (see ``tests/serve_process.py``); skipped without the
``serve`` extra.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("litserve")
httpx = pytest.importorskip("httpx")

from serve_process import (  # noqa: E402
    SENTENCES,
    SEQTAG,
    Server,
    assert_same,
    expected,
    train_pos_model,
    train_span_model,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def pos_model(tmp_path_factory) -> Path:
    return train_pos_model(tmp_path_factory.mktemp("pos"))


@pytest.fixture(scope="module")
def span_model(tmp_path_factory) -> Path:
    return train_span_model(tmp_path_factory.mktemp("spans"))


def test_requests_over_the_limits_get_413_naming_the_limit(tmp_path, pos_model):
    server = Server(tmp_path, pos_model, "--max_sentences", "3", "--max_tokens", "10")
    try:
        server.wait_ready()
        many = server.post({"sentences": [["a"]] * 4})
        assert many.status_code == 413
        assert "over the limit of 3 per request (seqtag serve --max_sentences)" in many.text
        long = server.post({"sentences": [["a"] * 6, ["b"] * 5]})
        assert long.status_code == 413 and "more than 10 tokens" in long.text
        huge = server.post({"sentences": [["x" * 100_000]]})  # over 256 x 10 + 64 KiB bytes
        assert huge.status_code == 413 and "request body: over" in huge.text
        assert server.post({"sentences": [["a"] * 5, ["b"] * 5]}).status_code == 200
        assert server.stop() == 0
    finally:
        server.close()


def test_health_is_not_ready_before_the_model_is_loaded(tmp_path, span_model):
    server = Server(tmp_path, span_model)
    try:
        before = server.wait_ready()
        # Until the model is loaded nothing answers, or /health says 503; the moment it
        # says 200, a request is tagged.
        assert before and set(before) <= {"refused", "503"}, before
        assert server.post({"sentences": [["EU"]]}).status_code == 200
    finally:
        server.close()


def test_sigterm_answers_every_request_in_flight(tmp_path, span_model):
    server = Server(tmp_path, span_model, "--max_batch_size", "4", "--batch_timeout", "1.0")
    try:
        server.wait_ready()
        sentences = [SENTENCES[0] * 3] * 300
        answers: list[httpx.Response] = []

        def send() -> None:
            answers.append(server.post({"sentences": sentences}))

        threads = [threading.Thread(target=send) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # sent, and waiting in the first batch's second of collection
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
        assert server.process.wait(timeout=90) == 0, server.output()
        assert [a.status_code for a in answers] == [200] * 6
        (wanted,) = expected(span_model, sentences[:1])
        for answer in answers:
            assert_same(answer.json()["sentences"], [wanted] * 300)
        assert "Traceback" not in server.output()
    finally:
        server.close()


def test_a_request_that_waits_too_long_gets_504_and_the_server_goes_on(tmp_path):
    """A wide network keeps the worker busy for seconds with a request that takes a fraction
    of that to send, while a second request waits past ``--timeout``."""
    ckpt = train_span_model(tmp_path, hidden_size=512)
    server = Server(tmp_path, ckpt, "--timeout", "1.0", "--max_tokens", "50000")
    try:
        server.wait_ready()
        answers: dict[str, httpx.Response] = {}
        slow = {"sentences": [SENTENCES[0] * 4 + SENTENCES[1] * 2] * 1000}  # 40,000 tokens
        first = threading.Thread(target=lambda: answers.update(first=server.post(slow)))
        first.start()
        time.sleep(1.0)  # the first request is being tagged (about 5 s on one thread)
        answers["queued"] = server.post({"sentences": [["EU"]]})
        first.join()
        assert answers["first"].status_code == 200
        assert answers["queued"].status_code == 504
        assert answers["queued"].json() == {"detail": "Request timed out"}
        assert server.post({"sentences": [["EU"]]}).status_code == 200
    finally:
        server.close()


def test_command_line_errors_are_one_line(tmp_path, pos_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = _seqtag("serve", "--ckpt_path", str(pos_model), "--port", str(port), cwd=tmp_path)
    _one_line(busy, 1, f"port: cannot listen on 127.0.0.1:{port}")
    refused = _seqtag(
        "serve", "--ckpt_path", str(pos_model), "--min_confidence", "0.5", cwd=tmp_path
    )
    _one_line(refused, 1, "min_confidence drops low-confidence spans")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n", encoding="utf-8")
    _one_line(_seqtag("serve", "--ckpt_path", str(text), cwd=tmp_path), 1, "notes.txt: not a")
    _one_line(
        _seqtag("serve", "--ckpt_path", str(pos_model), "--port", "80", cwd=tmp_path), 2, "port:"
    )
    assert list(tmp_path.iterdir()) == [text]  # nothing written (no client.py, no logs)


def _seqtag(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SEQTAG, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _one_line(result: subprocess.CompletedProcess, status: int, message: str) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("seqtag: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
