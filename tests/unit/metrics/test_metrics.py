"""Span F1 against hand-worked cases and seqeval; token accuracy under padding."""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from seqtag.data.schemes import get_spans
from seqtag.errors import TagSchemeError
from seqtag.metrics.span_f1 import (
    OTHER_TYPE,
    SpanF1,
    TokenAccuracy,
    format_span_report,
)

IOB_TAGS = ["O", "B-X", "I-X", "B-Y", "I-Y", "B-Z-Q", "I-Z-Q"]
BIOES_TAGS = ["O", "B-X", "I-X", "E-X", "S-X", "B-Y", "I-Y", "E-Y", "S-Y"]


def random_corpus(rng: random.Random, pool: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted sentences, both possibly ill-formed; predictions are noisy golds."""
    golds = [
        [rng.choice(pool) for _ in range(rng.randint(0, 9))] for _ in range(rng.randint(1, 20))
    ]
    noise = rng.random()
    preds = [[rng.choice(pool) if rng.random() < noise else t for t in s] for s in golds]
    return preds, golds


def bioes_as_iob2(sentences: list[list[str]]) -> list[list[str]]:
    """conlleval's reading of BIOES: S- as B-, E- as I-, token by token."""
    return [[{"S": "B", "E": "I"}.get(t[0], t[0]) + t[1:] for t in s] for s in sentences]


def seqeval_scores(preds, golds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        micro = tuple(
            score(golds, preds, zero_division=0)
            for score in (precision_score, recall_score, f1_score)
        )
        report = classification_report(golds, preds, output_dict=True, zero_division=0)
    per_type = {k: v for k, v in report.items() if not k.endswith(" avg")}
    return micro, per_type


def scores(metric: SpanF1) -> tuple[float, float, float]:
    result = metric.compute()
    return tuple(result[name].item() for name in ("precision", "recall", "f1"))


def test_hand_worked_corpus():
    golds = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    preds = [["B-PER", "I-PER", "O", "I-LOC"], ["B-ORG", "I-ORG"]]
    # gold chunks: PER 0-2, LOC 3-4, ORG 0-1; predicted: PER 0-2, LOC 3-4 (I- after O opens a
    # chunk), ORG 0-2; correct: PER and LOC.
    metric = SpanF1(["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"])
    metric.update_strings(preds, golds)
    result = metric.compute()
    assert set(result) == {"precision", "recall", "f1"}
    assert all(value.dtype == torch.float64 for value in result.values())
    assert scores(metric) == pytest.approx((2 / 3, 2 / 3, 2 / 3), abs=1e-12)
    per_type = metric.per_type()
    assert list(per_type) == ["LOC", "ORG", "PER"]
    assert per_type["ORG"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
        "predicted": 1,
        "correct": 0,
    }
    assert per_type["PER"]["f1"] == 1.0
    report = format_span_report(metric)
    assert report.splitlines()[0] == (
        "processed 6 tokens with 3 phrases; found: 3 phrases; correct: 2."
    )
    assert "accuracy: 66.67%" in report


def test_precision_and_recall_differ():
    metric = SpanF1(["O", "B-A", "I-A"])
    metric.update_strings([["B-A", "O", "B-A", "B-A"]], [["B-A", "O", "O", "O"]])
    precision, recall, f1 = scores(metric)
    assert (precision, recall) == (1 / 3, 1.0)
    assert f1 == pytest.approx(0.5, abs=1e-15)


@pytest.mark.parametrize("scheme", ["iob2", "iob1"])
def test_matches_seqeval_on_thousands_of_random_sentences_iob(scheme):
    rng = random.Random(f"seqeval-{scheme}")
    sentences = 0
    for _ in range(250):
        preds, golds = random_corpus(rng, IOB_TAGS)
        sentences += len(golds)
        metric = SpanF1(IOB_TAGS, scheme)
        metric.update_strings(preds, golds)
        (p, r, f), per_type = seqeval_scores(preds, golds)
        assert scores(metric) == pytest.approx((p, r, f), abs=1e-9), (preds, golds)
        check_per_type(metric, per_type)
    assert sentences > 2000


def test_matches_seqeval_on_thousands_of_random_sentences_bioes():
    """conlleval-exact for BIOES: scored as conlleval scores it after reading it as iob2."""
    rng = random.Random("seqeval-bioes")
    sentences = 0
    for _ in range(250):
        preds, golds = random_corpus(rng, BIOES_TAGS)
        sentences += len(golds)
        metric = SpanF1(BIOES_TAGS, "bioes")
        metric.update_strings(preds, golds)
        (p, r, f), per_type = seqeval_scores(bioes_as_iob2(preds), bioes_as_iob2(golds))
        assert scores(metric) == pytest.approx((p, r, f), abs=1e-9), (preds, golds)
        check_per_type(metric, per_type)
    assert sentences > 2000


def check_per_type(metric: SpanF1, expected: dict[str, dict[str, float]]) -> None:
    ours = metric.per_type()
    for type_, row in ours.items():
        if type_ not in expected:  # seqeval lists only types that occur
            assert row["support"] == row["predicted"] == 0
            continue
        reference = expected[type_]
        assert row["support"] == reference["support"]
        for ours_key, their_key in (("precision", "precision"), ("recall", "recall")):
            assert row[ours_key] == pytest.approx(reference[their_key], abs=1e-9)
        assert row["f1"] == pytest.approx(reference["f1-score"], abs=1e-9)
    assert set(expected) <= set(ours)


def padded_batch(rng: random.Random, preds, golds, tags: list[str]):
    """Id tensors [B, T] with junk predictions and -100 targets at padded positions."""
    longest = max(len(s) for s in golds) + 2
    pred_ids = torch.randint(0, len(tags), (len(golds), longest))
    gold_ids = torch.full((len(golds), longest), -100)
    mask = torch.zeros(len(golds), longest, dtype=torch.bool)
    for i, (pred, gold) in enumerate(zip(preds, golds, strict=True)):
        pred_ids[i, : len(pred)] = torch.tensor([tags.index(t) for t in pred], dtype=torch.long)
        gold_ids[i, : len(gold)] = torch.tensor([tags.index(t) for t in gold], dtype=torch.long)
        mask[i, : len(gold)] = True
    return pred_ids, gold_ids, mask


def test_id_tensors_with_padding_score_like_strings():
    rng = random.Random(4)
    tags = ["<pad>", *IOB_TAGS]
    by_ids, by_strings = SpanF1(tags), SpanF1(IOB_TAGS)
    for _ in range(30):
        preds, golds = random_corpus(rng, IOB_TAGS)
        by_ids.update(*padded_batch(rng, preds, golds, tags))
        by_strings.update_strings(preds, golds)
    assert scores(by_ids) == scores(by_strings)
    assert by_ids.per_type() == by_strings.per_type()
    assert int(by_ids.tokens) == int(by_strings.tokens)


def test_predicted_vocabulary_markers_count_as_outside():
    tags = ["<pad>", "O", "B-A", "I-A"]
    metric = SpanF1(tags)
    preds = torch.tensor([[2, 0, 3]])  # B-A <pad> I-A: the I-A opens a second chunk
    golds = torch.tensor([[2, 3, 3]])
    metric.update(preds, golds, torch.ones(1, 3, dtype=torch.bool))
    assert metric.per_type()["A"]["predicted"] == 2
    assert metric.per_type()["A"]["correct"] == 0


def test_forward_gives_batch_scores_and_accumulates():
    tags = ["O", "B-A", "I-A"]
    metric = SpanF1(tags)
    mask = torch.ones(1, 2, dtype=torch.bool)
    batch = metric(torch.tensor([[1, 2]]), torch.tensor([[1, 2]]), mask)
    assert batch["f1"].item() == 1.0
    batch = metric(torch.tensor([[0, 0]]), torch.tensor([[1, 0]]), mask)
    assert batch["f1"].item() == 0.0
    assert scores(metric) == (1.0, 0.5, pytest.approx(2 / 3))


def test_states_summed_across_processes_give_the_whole_corpus_scores():
    rng = random.Random(5)
    preds, golds = [], []
    for _ in range(40):
        p, g = random_corpus(rng, IOB_TAGS)
        preds += p
        golds += g
    half = len(golds) // 2
    whole, first, second = SpanF1(IOB_TAGS), SpanF1(IOB_TAGS), SpanF1(IOB_TAGS)
    whole.update_strings(preds, golds)
    first.update_strings(preds[:half], golds[:half])
    second.update_strings(preds[half:], golds[half:])

    summed = SpanF1(IOB_TAGS)
    summed.update_strings([], [])  # mark it updated, so that compute() does not warn
    for name in ("correct", "predicted", "gold", "tokens", "correct_tokens"):
        setattr(summed, name, getattr(first, name) + getattr(second, name))
    assert scores(summed) == scores(whole)

    first.merge_state(second)
    assert scores(first) == scores(whole)
    assert first.per_type() == whole.per_type()
    assert format_span_report(first) == format_span_report(whole)


def test_report_after_compute_needs_no_synchronisation(monkeypatch):
    """Lightning prints the report on rank 0 only: a collective call there would hang."""
    metric = SpanF1(["O", "B-A", "I-A"])
    metric.update_strings([["B-A", "I-A"]], [["B-A", "O"]])
    metric.compute()
    expected = format_span_report(metric)

    def no_sync(*args, **kwargs):
        raise AssertionError("synchronised again")

    monkeypatch.setattr(metric, "sync", no_sync)
    assert format_span_report(metric) == expected
    assert metric.per_type()["A"]["predicted"] == 1
    metric.update_strings([["B-A"]], [["B-A"]])
    with pytest.raises(AssertionError, match="synchronised again"):
        metric.per_type()  # the counts changed since compute(): they must be gathered afresh


def test_types_missing_from_the_tag_list_are_kept_in_an_other_slot():
    metric = SpanF1(["O", "B-PER", "I-PER"])
    metric.update_strings([["B-PER", "B-LOC", "O"]], [["B-PER", "B-LOC", "B-MISC"]])
    per_type = metric.per_type()
    assert per_type[OTHER_TYPE]["support"] == 2
    assert per_type[OTHER_TYPE]["predicted"] == 1
    assert per_type[OTHER_TYPE]["correct"] == 1
    assert scores(metric) == pytest.approx((1.0, 2 / 3, 0.8))
    assert OTHER_TYPE in format_span_report(metric)
    assert OTHER_TYPE not in SpanF1(["O", "B-PER"]).per_type()


def test_no_chunks_scores_zero():
    metric = SpanF1(["O", "B-A"])
    metric.update_strings([["O", "O"]], [["O", "O"]])
    result = metric.compute()
    assert all(value.item() == 0.0 and value.dtype == torch.float64 for value in result.values())


def test_reset_clears_counts():
    metric = SpanF1(["O", "B-A"])
    metric.update_strings([["B-A"]], [["B-A"]])
    metric.reset()
    metric.update_strings([["O"]], [["B-A"]])
    assert scores(metric) == (0.0, 0.0, 0.0)


def test_tag_list_may_be_in_another_scheme_than_the_scored_tags():
    """The model may predict BIOES while the corpus (and so the score) is iob2."""
    metric = SpanF1(["O", "B-A", "I-A", "E-A", "S-A"], "iob2")
    metric.update_strings([["B-A", "I-A"]], [["B-A", "I-A"]])
    assert scores(metric) == (1.0, 1.0, 1.0)
    with pytest.raises(TagSchemeError, match="'E-A' is not valid in the iob2 scheme"):
        metric.update_strings([["B-A", "E-A"]], [["B-A", "I-A"]])


@pytest.mark.parametrize("bad", ["X-PER", "B-", "PER"])
def test_bad_tags_raise_tag_scheme_errors(bad):
    with pytest.raises(TagSchemeError, match=repr(bad)):
        SpanF1(["O", bad])
    metric = SpanF1(["O", "B-PER", "I-PER"])
    with pytest.raises(TagSchemeError, match=repr(bad)):
        metric.update_strings([["O", bad]], [["O", "B-PER"]])
    with pytest.raises(TagSchemeError, match="unknown tag scheme"):
        SpanF1(["O"], "bilou")


def test_wrong_shapes_and_ids_raise_value_errors():
    metric = SpanF1(["O", "B-A", "I-A"])
    ids = torch.zeros(2, 3, dtype=torch.long)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape"):
        metric.update(ids, ids[:, :2], mask)
    with pytest.raises(ValueError, match="mask"):
        metric.update(ids, ids)
    with pytest.raises(ValueError, match="outside"):
        metric.update(ids, torch.full((2, 3), -100), mask)
    with pytest.raises(ValueError, match="outside"):
        metric.update(torch.full((2, 3), 3), ids, mask)
    metric.update(ids, torch.full((2, 3), -100), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="3 tags but its gold sentence has 2"):
        metric.update_strings([["O", "O", "O"]], [["O", "O"]])
    with pytest.raises(ValueError, match="2 predicted sentences but 1 gold"):
        metric.update_strings([["O"], ["O"]], [["O"]])


def test_report_layout():
    metric = SpanF1(["O", "B-LOC", "B-PER"])
    metric.update_strings([["B-LOC", "B-PER", "O"]], [["B-LOC", "O", "B-PER"]])
    lines = format_span_report(metric).splitlines()
    assert lines[0] == "processed 3 tokens with 2 phrases; found: 2 phrases; correct: 1."
    assert lines[1] == "accuracy: 33.33%"
    assert lines[2].split() == ["type", "precision", "recall", "f1", "support", "predicted"]
    assert lines[3].split() == ["LOC", "100.00", "100.00", "100.00", "1", "1"]
    assert lines[4].split() == ["PER", "0.00", "0.00", "0.00", "1", "1"]
    assert lines[5].split() == ["overall", "50.00", "50.00", "50.00", "2", "2"]
    assert len({len(line) for line in lines[2:]}) == 1  # columns line up

    from_dict = format_span_report(metric.per_type(), digits=1).splitlines()
    assert from_dict[0].startswith("type")
    assert from_dict[-1].split() == ["overall", "50.0", "50.0", "50.0", "2", "2"]
    hand_made = {"A": {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 2, "predicted": 4}}
    assert format_span_report(hand_made).splitlines()[-1].split()[1:4] == [
        "50.00",
        "100.00",
        "66.67",
    ]


def test_scores_equal_conlleval_counts_via_spans():
    """Counting by span sets equals conlleval's streaming count on a hand-checked case."""
    gold = ["B-A", "I-A", "B-A", "O", "I-B", "I-B", "B-A"]
    pred = ["B-A", "I-A", "I-A", "O", "B-B", "I-B", "I-A"]
    assert get_spans(gold) == [("A", 0, 2), ("A", 2, 3), ("B", 4, 6), ("A", 6, 7)]
    assert get_spans(pred) == [("A", 0, 3), ("B", 4, 6), ("A", 6, 7)]
    metric = SpanF1(["O", "B-A", "I-A", "B-B", "I-B"])
    metric.update_strings([pred], [gold])
    assert scores(metric) == pytest.approx((2 / 3, 2 / 4, 4 / 7))


# -- token accuracy ------------------------------------------------------------------------


def test_token_accuracy_counts_only_real_tokens():
    preds = torch.tensor([[1, 2, 3, 0], [2, 2, 0, 0]])
    target = torch.tensor([[1, 2, 0, -100], [2, -100, -100, -100]])  # 4 real tokens, 3 right
    metric = TokenAccuracy()
    metric.update(preds, target)
    assert metric.compute().item() == pytest.approx(0.75)


def test_token_accuracy_counts_unseen_gold_tags_as_wrong():
    metric = TokenAccuracy()
    metric.update(torch.tensor([[1, 2, 0]]), torch.tensor([[1, -1, -100]]))
    assert metric.compute().item() == 0.5
    assert metric.compute().dtype == torch.float64


def test_token_accuracy_states_sum():
    first, second, whole = TokenAccuracy(), TokenAccuracy(), TokenAccuracy()
    a, b = torch.tensor([[1, 1]]), torch.tensor([[1, 0]])
    first.update(a, b)
    second.update(b, b)
    whole.update(torch.cat([a, b]), torch.cat([b, b]))
    first.merge_state(second)
    assert first.compute() == whole.compute() == 0.75
