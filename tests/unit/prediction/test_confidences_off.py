"""Inference pays only for what is asked: without confidences, ``tag()``, ``tag_stream()``,
``RayTagger``, ``seqtag serve``'s tagging and ``seqtag predict`` give the same tags and spans and
never run the probability computations (a CRF's forward-backward pass, its passes per span).

The probability methods are spied on (they still answer), so a test fails both when the tags
change and when the work is done anyway.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import train_checkpoint

from seqtag import ConfigError, SequenceTagger, TaggingDataModule
from seqtag.cli.main import main
from seqtag.models.crf.layer import CRF
from seqtag.models.tagger import Tagger
from seqtag.serving.inference import tag_requests
from seqtag.serving.requests import Limits, TagRequest

pytestmark = pytest.mark.usefixtures("one_thread")

#: Every method that computes a probability; none may run without confidences.
PROBABILITY_METHODS = ("token_probabilities", "span_confidence", "best_path_probability")
WORDS = {
    "DT": ["the", "a", "this"],
    "JJ": ["big", "red", "old"],
    "NN": ["dog", "cat", "house", "tree"],
    "VB": ["sees", "likes", "finds"],
    "IN": ["in", "on", "near"],
}


def _phrase(rng: random.Random) -> list[tuple[str, str]]:
    tags = ["DT", *["JJ"] * rng.randint(0, 1), "NN"]
    return [(rng.choice(WORDS[t]), "B-NP" if i == 0 else "I-NP") for i, t in enumerate(tags)]


def _write_corpus(path: Path, count: int, seed: int) -> Path:
    """``word chunk`` lines, a blank line between sentences, chunks in IOB2."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(count):
        rows = [*_phrase(rng), (rng.choice(WORDS["VB"]), "B-VP"), *_phrase(rng)]
        if rng.random() < 0.5:
            rows += [(rng.choice(WORDS["IN"]), "B-PP"), *_phrase(rng)]
        blocks.append("\n".join(f"{w} {t}" for w, t in [*rows, (".", "O")]))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("chunks")
    return {
        "train": _write_corpus(folder / "train.txt", 60, 1),
        "test": _write_corpus(folder / "test.txt", 23, 3),
    }


def _checkpoint(corpus: dict[str, Path], folder: Path, decoder: str) -> Path:
    data = TaggingDataModule(
        train_path=str(corpus["train"]), format="columns", batch_size=8, tag_scheme="iob2"
    )
    model = SequenceTagger(hidden_size=16, embedding_dim=16, decoder=decoder)
    return train_checkpoint(folder, data, model, epochs=3)


@pytest.fixture(scope="module", params=["crf", "softmax"])
def checkpoint(request, corpus, tmp_path_factory) -> Path:
    return _checkpoint(corpus, tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def sentences(corpus) -> list[list[str]]:
    blocks = corpus["test"].read_text(encoding="utf-8").strip().split("\n\n")
    found = [[line.split()[0] for line in block.splitlines()] for block in blocks]
    return [*found[:5], [], *found[5:]]  # an empty sentence stays in its place


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    """The names of the probability methods called, on any tagger (and a CRF's marginals)."""
    called: list[str] = []
    for name in PROBABILITY_METHODS:
        original = getattr(Tagger, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            called.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Tagger, name, spy)
    original_marginals = CRF.marginals

    def marginals(self, *args, **kwargs):
        called.append("marginals")
        return original_marginals(self, *args, **kwargs)

    monkeypatch.setattr(CRF, "marginals", marginals)
    return called


def _without_confidence(spans: list[dict] | None) -> list[dict] | None:
    if spans is None:
        return None
    return [{k: v for k, v in span.items() if k != "confidence"} for span in spans]


def test_tags_are_the_same_without_confidences(checkpoint, sentences, calls):
    model = SequenceTagger.load_from_checkpoint(checkpoint)
    with_confidences = model.tag(sentences, batch_size=4)
    assert calls  # the spies see the work when it is asked for
    calls.clear()
    tags = model.tag(sentences, batch_size=4, confidences=False)
    assert calls == []
    assert tags == [[tag for tag, _ in sentence] for sentence in with_confidences]
    assert tags[5] == [] and all(isinstance(t, str) for sentence in tags for t in sentence)


def test_spans_are_the_same_without_confidences(checkpoint, sentences, calls):
    model = SequenceTagger.load_from_checkpoint(checkpoint)
    full = model.tag(sentences, batch_size=4, spans=True)
    calls.clear()
    bare = model.tag(sentences, batch_size=4, spans=True, confidences=False)
    assert calls == []
    assert sum(len(s["spans"]) for s in bare) > len(sentences)
    for got, wanted in zip(bare, full, strict=True):
        assert got["confidences"] is None
        assert got["tags"] == wanted["tags"] and got["tokens"] == wanted["tokens"]
        assert got["spans"] == _without_confidence(wanted["spans"])
        assert all(set(span) == {"start", "end", "type"} for span in got["spans"])


def test_tag_stream_without_confidences_is_tag_without_them(checkpoint, sentences, calls):
    model = SequenceTagger.load_from_checkpoint(checkpoint)
    tags = model.tag(sentences, confidences=False)
    dicts = model.tag(sentences, spans=True, confidences=False)
    calls.clear()
    assert list(model.tag_stream(iter(sentences), chunk_size=4, confidences=False)) == tags
    streamed = list(model.tag_stream(iter(sentences), chunk_size=4, spans=True, confidences=False))
    assert calls == []
    assert [(s["index"], s["tags"], s["spans"]) for s in streamed] == [
        (s["index"], s["tags"], s["spans"]) for s in dicts
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"confidences": "false"}, "confidences must be True or False, got 'false'"),
        ({"confidences": None}, "confidences must be True or False, got None"),
        ({"spans": 1}, "spans must be True or False, got 1"),
    ],
)
def test_switches_that_are_not_booleans_are_refused(checkpoint, options, message):
    model = SequenceTagger.load_from_checkpoint(checkpoint)
    with pytest.raises(ConfigError, match=message):
        model.tag([["the", "dog"]], **options)
    with pytest.raises(ConfigError, match=message):
        model.tag_stream([["the", "dog"]], **options)  # at the call, before any sentence


def test_ray_tagger_without_confidences_skips_them(checkpoint, sentences, calls):
    pytest.importorskip("ray")
    from seqtag.integrations.ray_data import RayTagger

    expected = SequenceTagger.load_from_checkpoint(checkpoint).tag(sentences, confidences=False)
    tagger = RayTagger(str(checkpoint), device="cpu")
    calls.clear()
    out = tagger({"tokens": sentences, "id": list(range(len(sentences)))})
    assert calls == []
    assert sorted(out) == ["id", "tags", "tokens"]
    assert [list(tags) for tags in out["tags"]] == expected


def test_serving_without_confidences_skips_them(checkpoint, sentences, calls):
    model = SequenceTagger.load_from_checkpoint(checkpoint).eval()
    full = model.tag(sentences, spans=True)
    calls.clear()
    (answer,) = tag_requests(model, [TagRequest(sentences)], confidences=False)
    assert calls == []
    assert [a["tags"] for a in answer] == [s["tags"] for s in full]
    assert [a["spans"] for a in answer] == [_without_confidence(s["spans"]) for s in full]
    assert all(a["confidences"] is None for a in answer)


def test_serve_confidences_false_reaches_the_worker(checkpoint, sentences, calls):
    """``seqtag serve --confidences false`` builds the worker's API with it; its batches
    skip the probabilities and answer no confidence."""
    from seqtag.serving.api import TaggerAPI

    api = TaggerAPI(checkpoint.read_bytes(), limits=Limits(), confidences=False)
    api.model = SequenceTagger.load_from_checkpoint(checkpoint).eval()  # what setup() loads
    calls.clear()
    answers = api.predict([TagRequest(sentences[:3]), TagRequest(sentences[3:])])
    assert calls == []
    found = [s for answer in answers for s in answer["sentences"]]
    assert [s["tags"] for s in found] == api.model.tag(sentences, confidences=False)
    assert all(s["confidences"] is None for s in found)
    assert all("confidence" not in span for s in found for span in s["spans"])


def test_serving_threshold_without_confidences_drops_the_same_spans(checkpoint, sentences):
    model = SequenceTagger.load_from_checkpoint(checkpoint).eval()
    requests = [TagRequest(sentences, 0.9)]
    (full,) = tag_requests(model, requests)
    (bare,) = tag_requests(model, requests, confidences=False)
    assert [a["tags"] for a in bare] == [a["tags"] for a in full]
    assert [a["spans"] for a in bare] == [_without_confidence(a["spans"]) for a in full]


def test_predict_without_confidences_skips_them(checkpoint, corpus, tmp_path, calls):
    def predict(output: Path, *extra: str) -> list[str]:
        main(
            [
                "predict",
                f"--ckpt_path={checkpoint}",
                f"--data.predict_path={corpus['test']}",
                "--data.predict_format=columns",
                f"--prediction.output={output}",
                "--trainer.enable_progress_bar=false",
                "--trainer.logger=false",
                *extra,
            ]
        )
        return output.read_text(encoding="utf-8").splitlines()

    calls.clear()
    bare = predict(tmp_path / "bare.conll")
    assert calls == []
    full = predict(tmp_path / "full.conll", "--prediction.confidences=true")
    assert calls
    assert [line.rsplit("\t", 1)[0] if line else "" for line in full] == bare
    assert len(bare[0].split("\t")) == 2 and len(full[0].split("\t")) == 3
