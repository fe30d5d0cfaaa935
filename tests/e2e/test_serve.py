"""``seqtag serve``: a real server in a subprocess on 127.0.0.1, driven over HTTP: answers,
batching, refused requests, ``/info`` and the example client.

Every server here is ``python -m seqtag serve`` on a free port with a tiny checkpoint (a POS
model, and a CRF span model; see ``tests/serve_process.py``); the answers are compared with
``tag(spans=True)`` in this process. Start-up, limits, timeouts and shutdown are in
``test_serve_lifecycle.py``. Skipped without the ``serve`` extra.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import REPO

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

from seqtag import SequenceTagger  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

LINES = ("I know .", "Sue likes coffee")


@pytest.fixture(scope="module")
def pos_model(tmp_path_factory) -> Path:
    return train_pos_model(tmp_path_factory.mktemp("pos"))


@pytest.fixture(scope="module")
def span_model(tmp_path_factory) -> Path:
    return train_span_model(tmp_path_factory.mktemp("spans"))


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


@pytest.mark.parametrize("which", ["pos", "span"])
def test_answers_equal_tag(request, which):
    server = request.getfixturevalue(f"{which}_server")
    ckpt = request.getfixturevalue(f"{which}_model")
    response = server.post({"sentences": SENTENCES})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["sentences"] == expected(ckpt, SENTENCES)
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
        assert_same(answers[number].json()["sentences"], expected(span_model, sentences))
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
