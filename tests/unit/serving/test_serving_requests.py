"""What ``POST /predict`` accepts (seqtag.serving.requests), and tagging several requests
together (seqtag.serving.inference), without a server: fast, and run without the extra."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO, train_checkpoint

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.serving.inference import tag_requests
from seqtag.serving.requests import Limits, RequestError, TagRequest, parse_body, parse_request

pytestmark = pytest.mark.usefixtures("one_thread")

LIMITS = Limits(max_sentences=4, max_tokens=8)


def _refused(payload: object, *, spans: bool = False) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_request(payload, LIMITS, spans=spans)
    assert "\n" not in str(caught.value)
    return caught.value


def test_token_lists_and_text_lines_are_the_same_request():
    lists = parse_request({"sentences": [["The", "cat"], ["Hi"]]}, LIMITS, spans=False)
    lines = parse_request({"sentences": ["The cat", "Hi"]}, LIMITS, spans=False)
    assert lists == lines == TagRequest([["The", "cat"], ["Hi"]], None)
    assert parse_request({"sentences": [[], ["a"]]}, LIMITS, spans=False).sentences == [[], ["a"]]
    assert parse_request({"sentences": ["", "a b"]}, LIMITS, spans=False).sentences == [
        [],
        ["a", "b"],
    ]


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ([["a"]], "request body", "must be a JSON object"),
        ({}, "sentences", "missing"),
        ({"sentences": [], "extra": 1}, "extra", "is not a field"),
        ({"sentences": {"a": 1}}, "sentences", "got an object"),
        ({"sentences": [["a"], True]}, "sentences[1]", "got a boolean"),
        ({"sentences": [["a", ["b"]]]}, "sentences[0][1]", "must be a string, got a list"),
        ({"sentences": [["a", "\u3000"]]}, "sentences[0][1]", "is only whitespace (U+3000)"),
        ({"sentences": [["\x85"]]}, "sentences[0][0]", "is only whitespace"),
        ({"sentences": [["a\rb"]]}, "sentences[0][0]", "CARRIAGE RETURN"),
        ({"sentences": ["a b", "c\x0bd"]}, "sentences[1]", "LINE TABULATION) at character 2"),
        ({"sentences": ["a", "b"]}, "sentences", "a list of 2 single words"),
        ({"sentences": [], "min_confidence": True}, "min_confidence", "got True"),
        ({"sentences": [], "min_confidence": float("nan")}, "min_confidence", "from 0 to 1"),
    ],
)
def test_each_mistake_is_a_400_naming_its_field(payload, field, message):
    error = _refused(payload, spans=True)
    assert error.status == 400 and error.field == field
    assert str(error).startswith(f"{field}: ") and message in str(error)


def test_limits_are_413_naming_the_option():
    many = _refused({"sentences": [["a"]] * 5})
    assert many.status == 413 and "--max_sentences" in str(many) and "limit of 4" in str(many)
    long = _refused({"sentences": ["a b c d e", "f g h i"]})
    assert long.status == 413 and "more than 8 tokens" in str(long)
    with pytest.raises(RequestError) as body:
        parse_body(b" " * (LIMITS.max_body_bytes + 1), LIMITS, spans=False)
    assert body.value.status == 413 and "--max_tokens" in str(body.value)


def test_bodies_that_are_not_json_are_400():
    for body, message in (
        (b"{", "is not JSON"),
        (b'"\xff"', "is not UTF-8"),
        (b"[" * 100_000, "nested too deeply"),  # deeper than Python's recursion limit
    ):
        with pytest.raises(RequestError) as caught:
            parse_body(body, Limits(), spans=False)
        assert caught.value.status == 400 and message in str(caught.value)


def test_min_confidence_is_for_span_models_and_a_request_overrides_the_server():
    assert "tags no spans" in str(_refused({"sentences": [], "min_confidence": 0.5}))
    request = {"sentences": [["a"]], "min_confidence": 0.5}
    assert parse_request(request, LIMITS, spans=True, min_confidence=0.9).min_confidence == 0.5
    default = parse_request({"sentences": [["a"]]}, LIMITS, spans=True, min_confidence=0.9)
    assert default.min_confidence == 0.9


@pytest.fixture(scope="module")
def span_model(tmp_path_factory) -> SequenceTagger:
    data = TaggingDataModule(
        train_path=str(REPO / "tests" / "fixtures" / "tiny.conll2003.txt"),
        format="columns",
        tag_scheme="iob2",
        batch_size=2,
    )
    model = SequenceTagger(hidden_size=8, embedding_dim=8, decoder="crf")
    path = train_checkpoint(tmp_path_factory.mktemp("spans"), data, model)
    return SequenceTagger.load_from_checkpoint(path).eval()


def test_requests_tagged_together_get_their_own_tag_answers(span_model):
    first = [["EU", "rejects", "German", "call", "."], [], ["Peter", "Blackburn"]]
    second = [["BRUSSELS", "1996-08-22"]]
    answers = tag_requests(span_model, [TagRequest(first), TagRequest(second)])
    for sentences, answer in zip((first, second), answers, strict=True):
        expected = span_model.tag(sentences, spans=True)
        assert [a["tags"] for a in answer] == [e["tags"] for e in expected]
        assert [a["tokens"] for a in answer] == sentences
        for got, wanted in zip(answer, expected, strict=True):
            assert got["confidences"] == pytest.approx(wanted["confidences"], rel=1e-5)
    json.dumps(answers, allow_nan=False)  # what the worker sends


def test_a_threshold_applies_to_its_own_request_only(span_model):
    sentences = [["EU", "rejects", "German", "call", "."]]
    plain, strict = tag_requests(span_model, [TagRequest(sentences), TagRequest(sentences, 0.99)])
    assert plain[0]["spans"] and strict[0]["spans"] == []
    assert set(strict[0]["tags"]) == {"O"}
    without = tag_requests(span_model, [TagRequest(sentences)], confidences=False)
    assert without[0][0]["confidences"] is None and without[0][0]["tags"] == plain[0]["tags"]
    assert torch.get_num_threads() == 1
