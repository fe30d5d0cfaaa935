"""A ``seqtag serve`` process for the end-to-end tests (tests/e2e/test_serve*.py), the tiny
models they serve, and the comparison of answers with ``tag(spans=True)``. Imported only
where ``litserve`` and ``httpx`` are installed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO, train_checkpoint
from doc_blocks import free_port

from seqtag import SequenceTagger, TaggingDataModule

FIXTURES = REPO / "tests" / "fixtures"
SEQTAG = (sys.executable, "-m", "seqtag")
SENTENCES = [
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Peter", "Blackburn"],
    [],
    ["Zyxwv", "qwerty", "BRUSSELS", "1996-08-22"],  # unseen words
    ["The", "European", "Commission", "said", "on", "Thursday", "."] * 60,  # 420 tokens
    ["a"],
]


class Server:
    """``seqtag serve`` in a subprocess (its own session, so nothing it starts outlives it)."""

    def __init__(self, folder: Path, ckpt: Path, *options: str) -> None:
        self.port = free_port()
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


def train_pos_model(folder: Path) -> Path:
    """A tiny POS tagger (no tag scheme: answers have no spans)."""
    data = TaggingDataModule(train_path=str(FIXTURES / "tiny.conllu"), batch_size=2)
    return train_checkpoint(folder, data, SequenceTagger(hidden_size=8, embedding_dim=8))


def train_span_model(folder: Path, hidden_size: int = 8) -> Path:
    """A tiny CRF tagger of IOB2 entities (answers have spans)."""
    data = TaggingDataModule(
        train_path=str(FIXTURES / "tiny.conll2003.txt"),
        format="columns",
        tag_scheme="iob2",
        batch_size=2,
    )
    model = SequenceTagger(hidden_size=hidden_size, embedding_dim=8, decoder="crf")
    return train_checkpoint(folder, data, model)


def expected(ckpt: Path, sentences: list) -> list[dict]:
    """``tag(spans=True)`` in this process, as the server answers it."""
    model = SequenceTagger.load_from_checkpoint(ckpt, map_location="cpu").eval()
    return [
        {key: sentence[key] for key in ("tokens", "tags", "confidences", "spans")}
        for sentence in model.tag(sentences, spans=True)
    ]


def assert_same(answers: list[dict], expected: list[dict]) -> None:
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
