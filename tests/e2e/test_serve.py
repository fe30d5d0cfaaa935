"""``seqtag serve``: a real server in a subprocess on 127.0.0.1, driven over HTTP.

Every server here is ``python -m seqtag serve`` on a free port with a tiny checkpoint (a POS
model, and a CRF span model); the answers are compared with ``tag(spans=True)`` in this
process, field for field and float for float. Skipped without the ``serve`` extra.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, train_checkpoint

pytest.importorskip("litserve")
httpx = pytest.importorskip("httpx")

from seqtag import SequenceTagger, TaggingDataModule  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

FIXTURES = REPO / "tests" / "fixtures"
SEQTAG = (sys.executable, "-m", "seqtag")
LINES = ("I know .", "Sue likes coffee")
SENTENCES = [
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Peter", "Blackburn"],
    [],
    ["Zyxwv", "qwerty", "BRUSSELS", "1996-08-22"],  # unseen words
    ["The", "European", "Commission", "said", "on", "Thursday", "."] * 60,  # 420 tokens
    ["a"],
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``seqtag serve`` in a subprocess (its own session, so nothing it starts outlives it)."""

    def __init__(self, folder: Path, ckpt: Path, *options: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"serve-{self.port}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*SEQTAG, "serve", "--ckpt_path", str(ckpt), "--port", str(self.port), *options],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 180) -> list[str]:
        """Poll ``/health`` until it answers 200; every answer before it, in order."""
        seen, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                status = httpx.get(f"{self.url}/health", timeout=5).status_code
            except httpx.TransportError:
                seen.append("refused")
            else:
                if status == 200:
                    return seen
                seen.append(str(status))
            time.sleep(0.05)
        raise AssertionError(f"not ready after {timeout} s:\n{self.output()}")

    def post(self, payload: object, **kwargs: object) -> httpx.Response:
        return httpx.post(f"{self.url}/predict", json=payload, timeout=120, **kwargs)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=90)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def pos_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pos")
    data = TaggingDataModule(train_path=str(FIXTURES / "tiny.conllu"), batch_size=2)
    return train_checkpoint(folder, data, SequenceTagger(hidden_size=8, embedding_dim=8))


@pytest.fixture(scope="module")
def span_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("spans")
    data = TaggingDataModule(
        train_path=str(FIXTURES / "tiny.conll2003.txt"),
        format="columns",
        tag_scheme="iob2",
        batch_size=2,
    )
    model = SequenceTagger(hidden_size=8, embedding_dim=8, decoder="crf")
    return train_checkpoint(folder, data, model)


@pytest.fixture(scope="module")
def pos_server(tmp_path_factory, pos_model):
    server = Server(tmp_path_factory.mktemp("pos_server"), pos_model)
    server.wait_ready()
    yield server
    server.close()


@pytest.fixture(scope="module")
def span_server(tmp_path_factory, span_model):
    """Waits up to 0.5 s for up to 8 requests, so that concurrent requests share a batch."""
    folder = tmp_path_factory.mktemp("span_server")
    server = Server(folder, span_model, "--max_batch_size", "8", "--batch_timeout", "0.5")
    server.wait_ready()
    yield server
    server.close()


def _expected(ckpt: Path, sentences: list) -> list[dict]:
    """``tag(spans=True)`` in this process, as the server answers it."""
    model = SequenceTagger.load_from_checkpoint(ckpt, map_location="cpu").eval()
    return [
        {key: sentence[key] for key in ("tokens", "tags", "confidences", "spans")}
        for sentence in model.tag(sentences, spans=True)
    ]


def _assert_same(answers: list[dict], expected: list[dict]) -> None:
    """Tokens, tags and spans exactly; confidences to float32 rounding (1e-5 relative).

    A sentence batched with other requests' sentences is padded to another length, and a
    CRF's marginals then differ in the last bit or two (``tag()`` gives such differences too,
    for a sentence tagged in another list).
    """
    assert len(answers) == len(expected)
    for answer, wanted in zip(answers, expected, strict=True):
        assert answer["tokens"] == wanted["tokens"] and answer["tags"] == wanted["tags"]
        assert answer["confidences"] == pytest.approx(wanted["confidences"], rel=1e-5)
        assert [(s["start"], s["end"], s["type"]) for s in answer["spans"]] == [
            (s["start"], s["end"], s["type"]) for s in wanted["spans"]
        ]
        spans = [s["confidence"] for s in answer["spans"]]
        assert spans == pytest.approx([s["confidence"] for s in wanted["spans"]], rel=1e-5)


@pytest.mark.parametrize("which", ["pos", "span"])
def test_answers_equal_tag(request, which):
    server = request.getfixturevalue(f"{which}_server")
    ckpt = request.getfixturevalue(f"{which}_model")
    response = server.post({"sentences": SENTENCES})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["sentences"] == _expected(ckpt, SENTENCES)
    lines = [" ".join(tokens) for tokens in SENTENCES]  # text lines, split on whitespace
    assert server.post({"sentences": lines}).json()["sentences"] == answer["sentences"]
    if which == "pos":
        assert all(sentence["spans"] is None for sentence in answer["sentences"])
    else:
        assert any(sentence["spans"] for sentence in answer["sentences"])


def test_min_confidence_drops_spans_as_seqtag_predict_does(tmp_path, span_server, span_model):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(s) for s in SENTENCES if s) + "\n", encoding="utf-8")
    threshold = 0.23
    predicted = subprocess.run(
        [
            *SEQTAG,
            "predict",
            f"--ckpt_path={span_model}",
            f"--data.predict_path={text}",
            "--data.predict_format=text",
            "--prediction.format=jsonl",
            "--prediction.confidences=true",
            f"--prediction.min_confidence={threshold}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert predicted.returncode == 0, predicted.stderr
    records = [json.loads(line) for line in predicted.stdout.splitlines()]
    answer = span_server.post(
        {"sentences": [s for s in SENTENCES if s], "min_confidence": threshold}
    ).json()["sentences"]
    assert [a["tags"] for a in answer] == [r["tags"] for r in records]
    rounded = [  # seqtag predict writes 4 decimals
        [{**span, "confidence": round(span["confidence"], 4)} for span in a["spans"]]
        for a in answer
    ]
    assert rounded == [r["spans"] for r in records]
    assert "O" in {tag for a in answer for tag in a["tags"]}  # something was dropped


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(span_server, span_model):
    requests = [[SENTENCES[n % len(SENTENCES)], SENTENCES[0][n:]] for n in range(8)]
    answers: dict[int, httpx.Response] = {}
    start = threading.Barrier(len(requests))

    def send(number: int) -> None:
        start.wait()
        answers[number] = span_server.post({"sentences": requests[number]})

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answers[n].status_code == 200 for n in answers), answers
    for number, sentences in enumerate(requests):
        _assert_same(answers[number].json()["sentences"], _expected(span_model, sentences))
    assert max(answers[n].json()["batch_requests"] for n in answers) > 1


BAD_REQUESTS = [
    # (body, headers, status, the start of the message)
    (b"not json", {}, 400, "request body: is not JSON"),
    (b'{"sentences": [["a"]]', {}, 400, "request body: is not JSON"),
    (b'{"sentences": [["\xff"]]}', {}, 400, "request body: is not UTF-8"),
    (b'[["The", "cat"]]', {}, 400, "request body: must be a JSON object"),
    (b"{}", {}, 400, "sentences: missing"),
    (b'{"sentences": [], "min_confidense": 0.5}', {}, 400, "min_confidense: is not a field"),
    (b'{"sentences": "The cat sat"}', {}, 400, "sentences: must be a list"),
    (b'{"sentences": [["a"], 7]}', {}, 400, "sentences[1]: must be a list of tokens"),
    (b'{"sentences": [["a", null]]}', {}, 400, "sentences[0][1]: must be a string, got null"),
    (b'{"sentences": [["a", 3]]}', {}, 400, "sentences[0][1]: must be a string, got a number"),
    (b'{"sentences": [["a", ""]]}', {}, 400, "sentences[0][1]: '', is empty"),
    (b'{"sentences": [[" \\t"]]}', {}, 400, "sentences[0][0]: ' \\t', is only whitespace"),
    (b'{"sentences": [["a\\u0000b"]]}', {}, 400, "sentences[0][0]: 'a\\x00b', holds a NUL"),
    (b'{"sentences": [["a\\nb"]]}', {}, 400, "sentences[0][0]: 'a\\nb', holds a line break"),
    (b'{"sentences": [["a\\u2028b"]]}', {}, 400, "sentences[0][0]: 'a\\u2028b', holds a line"),
    (b'{"sentences": ["The cat", "sat\\ron"]}', {}, 400, "sentences[1]: holds a line break"),
    (b'{"sentences": ["The", "cat"]}', {}, 400, "sentences: a list of 2 single words"),
    (b'{"sentences": ["The cat", ["sat"]]}', {}, 400, "sentences[0]: is a string among"),
    (b'{"sentences": [["The"], "cat sat"]}', {}, 400, "sentences[1]: is a string among"),
    (b'{"sentences": [], "min_confidence": "high"}', {}, 400, "min_confidence: must be a num"),
    (b'{"sentences": [], "min_confidence": 1.5}', {}, 400, "min_confidence: must be a number"),
    (b'{"sentences": [["a"]]}', {"Content-Type": "application/x-www-form-urlencoded"}, 415, ""),
]


def test_every_malformed_request_gets_its_4xx_and_the_server_goes_on(span_server):
    for body, headers, status, message in BAD_REQUESTS:
        headers = {"Content-Type": "application/json", **headers}
        response = httpx.post(f"{span_server.url}/predict", content=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        detail = response.json()["detail"]
        assert detail.startswith(message) and "\n" not in detail, (body, detail)
    assert httpx.get(f"{span_server.url}/predict").status_code == 405
    assert span_server.post({"sentences": [["EU"]]}).status_code == 200


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
        expected = _expected(span_model, sentences[:1])[0]
        for answer in answers:
            _assert_same(answer.json()["sentences"], [expected] * 300)
        assert "Traceback" not in server.output()
    finally:
        server.close()


def test_a_request_that_waits_too_long_gets_504_and_the_server_goes_on(tmp_path):
    """A wide network keeps the worker busy for seconds with a request that takes a fraction
    of that to send, while a second request waits past ``--timeout``."""
    data = TaggingDataModule(
        train_path=str(FIXTURES / "tiny.conll2003.txt"), format="columns", tag_scheme="iob2"
    )
    wide = SequenceTagger(hidden_size=512, embedding_dim=8, decoder="crf")
    ckpt = train_checkpoint(tmp_path, data, wide)
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


def test_info_describes_the_checkpoint_served(pos_server, pos_model):
    info = httpx.get(f"{pos_server.url}/info").json()["model"]
    data = pos_model.read_bytes()
    assert info["checkpoint"]["blake2b"] == hashlib.blake2b(data, digest_size=16).hexdigest()
    assert info["checkpoint"]["size"] == len(data)
    model = SequenceTagger.load_from_checkpoint(pos_model)
    assert info["tags"] == list(model.vocabularies.tags)
    assert info["tag_scheme"] is None and info["spans"] is False
    assert info["limits"]["max_sentences"] == 1000 and info["confidences"] is True
    import seqtag

    assert info["seqtag_version"] == seqtag.__version__
    schema = httpx.get(f"{pos_server.url}/openapi.json").json()
    assert "/predict" in schema["paths"]


def test_min_confidence_is_refused_for_a_pos_model(pos_server):
    answer = pos_server.post({"sentences": [["a"]], "min_confidence": 0.5})
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("min_confidence: drops low-confidence spans")


def test_example_client_tags_lines(pos_server):
    done = subprocess.run(
        [sys.executable, REPO / "examples" / "serve_client.py", "--url", pos_server.url, *LINES],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [len(line.split()) for line in lines] == [3, 3]
    assert all("/" in pair for line in lines for pair in line.split())


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
