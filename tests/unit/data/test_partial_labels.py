"""Partially annotated data: the missing-tag marker, allowed tag sets, batches and metrics."""

from __future__ import annotations

import itertools
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from seqtag.data.batching import PAD_TARGET, UNKNOWN_TARGET, UNSEEN_TARGET, collate
from seqtag.data.datamodule import TaggingDataModule
from seqtag.data.io.formats import read_conllu
from seqtag.data.partial import GoldEncoder, GoldTags
from seqtag.data.schemes import check_declared_scheme, convert_tags, scheme_tags
from seqtag.data.vocab import Vocabularies, Vocabulary
from seqtag.errors import ConfigError, CorpusFormatError
from seqtag.metrics.span_f1 import SpanF1, TokenAccuracy, format_span_report

# CoNLL-2000 layout: word, POS, chunk (IOB2 here); "_" marks an unknown chunk tag.
CHUNKS = """\
He PRP B-NP
reckons VBZ B-VP
the DT _
deficit NN I-NP
. . O

The DT B-NP
cat NN _
sat VBD B-VP
down RB _

a DT _
b NN _

dogs NNS B-NP
bark VBP B-VP
"""

FULL_CHUNKS = """\
He PRP B-NP
reckons VBZ B-VP
the DT B-NP
deficit NN I-NP
. . O

dogs NNS B-NP
bark VBP B-VP
"""

CONLLU = (
    "1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n"
    "2\tcat\tcat\t_\tNN\t_\t3\tnsubj\t_\t_\n"
    "3\tsleeps\tsleep\tVERB\tVBZ\t_\t0\troot\t_\t_\n"
    "\n"
    "1\tA\ta\tDET\tDT\t_\t2\tdet\t_\t_\n"
    "2\tdog\tdog\tNOUN\tNN\t_\t0\troot\t_\t_\n"
    "\n"
)


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _chunker(tmp_path: Path, text: str = CHUNKS, **kwargs) -> TaggingDataModule:
    path = _write(tmp_path, "train.txt", text)
    options = dict(
        train_path=path,
        val_path=path,
        format="columns",
        tag_scheme="iob2",
        batch_size=8,
        eval_batch_size=8,
    )
    options.update(kwargs)
    return TaggingDataModule(**options)


# -- the option -----------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["", " ", "a b", "\t", 3])
def test_bad_markers_are_one_line_config_errors(value):
    with pytest.raises(ConfigError, match=r"data\.missing_tag") as caught:
        TaggingDataModule(missing_tag=value)
    assert "\n" not in str(caught.value)


def test_the_marker_never_becomes_a_tag(tmp_path):
    dm = _chunker(tmp_path)
    assert list(dm.spec.vocabularies.tags) == ["B-NP", "B-VP", "I-NP", "O"]


def test_conllu_underscore_is_an_unknown_tag(tmp_path):
    path = _write(tmp_path, "train.conllu", CONLLU)
    dm = TaggingDataModule(train_path=path, format="conllu")
    assert list(dm.spec.vocabularies.tags) == ["DET", "NOUN", "VERB"]
    first = dm.encode("train")[0]
    assert first.tags.tolist() == [0, UNKNOWN_TARGET, 2]
    assert first.allowed.tolist() == [[True, False, False], [True] * 3, [False, False, True]]
    with pytest.raises(CorpusFormatError, match="UPOS column is '_'"):
        TaggingDataModule(train_path=path, format="conllu", missing_tag=None).sentences("train")


def test_the_conllu_reader_keeps_the_marker_only_where_asked(tmp_path):
    path = _write(tmp_path, "x.conllu", CONLLU)
    assert read_conllu(path, missing_tag="_")[0].tags == ("DET", "_", "VERB")
    assert read_conllu(path, require_tags=False, missing_tag="_")[0].tags is None
    with pytest.raises(CorpusFormatError, match="UPOS column is '_'"):
        read_conllu(path, missing_tag="-")


def test_a_dash_marker(tmp_path):
    dm = _chunker(tmp_path, CHUNKS.replace(" _\n", " -\n"), missing_tag="-")
    assert "-" not in dm.spec.vocabularies.tags
    assert sum(s.allowed is not None for s in dm.encode("train")) == 2


def test_without_a_marker_underscore_is_an_ordinary_tag(tmp_path):
    text = "the DT\ncat _\n\na DT\n"
    path = _write(tmp_path, "pos.txt", text)
    dm = TaggingDataModule(train_path=path, format="columns", missing_tag=None)
    assert list(dm.spec.vocabularies.tags) == ["DT", "_"]
    assert all(s.allowed is None for s in dm.encode("train"))
    # With the default marker, the same file has an unknown tag instead.
    default = TaggingDataModule(train_path=path, format="columns")
    assert list(default.spec.vocabularies.tags) == ["DT"]


def test_a_model_tag_equal_to_the_marker_is_refused():
    tags = Vocabulary(["DT", "_"], pad=None, unk=None)
    vocab = Vocabularies(words=Vocabulary([]), tags=tags)
    with pytest.raises(ConfigError, match="missing_tag '_' is a tag of the model"):
        GoldEncoder(vocab, "_")
    GoldEncoder(vocab, None)


# -- reading and reporting --------------------------------------------------------------------
def test_sentences_without_a_known_tag_are_left_out_of_training(tmp_path, caplog):
    dm = _chunker(tmp_path)
    with caplog.at_level(logging.INFO):
        train = dm.sentences("train")
    assert [s.tokens[0] for s in train] == ["He", "The", "dogs"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "1 sentences have no known tag" in warnings[0].getMessage()
    assert "train.txt" in warnings[0].getMessage()
    assert "train: 5 tokens have an unknown tag ('_'), in 2 partially tagged" in caplog.text


def test_evaluation_keeps_sentences_without_a_known_tag(tmp_path):
    dm = _chunker(tmp_path)
    assert len(dm.sentences("val")) == 4


def test_a_file_without_any_known_tag_is_refused(tmp_path):
    dm = _chunker(tmp_path, "a DT _\nb NN _\n")
    with pytest.raises(CorpusFormatError, match="no sentence has a known tag"):
        dm.sentences("train")


def test_scheme_checks_skip_unknown_tags(tmp_path, caplog):
    # Every chunk starts with I- after an unknown tag: not ill-formed, the unknown may be B-.
    text = "".join(f"w{i} X _\nx{i} X I-NP\ny{i} X O\n\n" for i in range(5))
    dm = _chunker(tmp_path, text)
    with caplog.at_level(logging.WARNING):
        dm.sentences("train")
    assert "not well-formed" not in caplog.text


def test_check_declared_scheme_counts_chunks_around_unknowns():
    class S:
        def __init__(self, tags):
            self.tags, self.line = tags, 1

    # One ill-formed chunk start (I-NP after O) in 5 chunks: repaired, not refused; the
    # I-NP after "_" is not ill-formed, and no chunk runs across an unknown tag.
    tags = ("B-NP", "_", "O", "I-NP", "_", "I-VP", "O", "B-NP", "O", "B-PP")
    check_declared_scheme("x", [S(tags)], "iob2", True, missing_tag="_")
    with pytest.raises(CorpusFormatError, match="1 of the file's 4 chunks"):
        check_declared_scheme("x", [S(tags[:-2])], "iob2", True, missing_tag="_")


# -- allowed sets against brute force ----------------------------------------------------------
def _brute_force(tags, corpus, train, types):
    """Per position, the union over every completion of the unknown tags of its converted tag."""
    candidates = scheme_tags(types, corpus)
    unknown = [i for i, t in enumerate(tags) if t is None]
    union: list[set[str]] = [set() for _ in tags]
    for filling in itertools.product(candidates, repeat=len(unknown)):
        completed = list(tags)
        for i, tag in zip(unknown, filling, strict=True):
            completed[i] = tag
        for i, tag in enumerate(convert_tags(completed, corpus, train)):
            union[i].add(tag)
    return union


SCHEME_PAIRS = [("iob2", "bioes"), ("iob1", "iob2"), ("iob1", "bioes"), ("bioes", "iob1")]


@pytest.mark.parametrize(("corpus", "train"), SCHEME_PAIRS)
def test_allowed_sets_are_the_union_over_completions(corpus, train):
    types = ["NP", "VP"]
    pool = scheme_tags(types, corpus)
    rng = random.Random(7)
    cases = [
        [None],
        ["B-NP" if corpus != "iob1" else "I-NP", None],
        [None, "I-NP"],
        [None, None, "I-NP", None],
        ["O", None, None, "I-VP"],
        [pool[1], None, pool[2]],
    ]
    for _ in range(150):
        length = rng.randint(1, 6)
        case = [None if rng.random() < 0.35 else rng.choice(pool) for _ in range(length)]
        if sum(t is None for t in case) <= 3:
            cases.append(case)
    gold = GoldTags(corpus, train, "_", types)
    for case in cases:
        possible = gold.possible(["_" if t is None else t for t in case])
        expected = _brute_force(case, corpus, train, types)
        for i, tag in enumerate(case):
            if tag is None:
                assert possible[i] is None
            else:
                assert possible[i] == expected[i], (case, i)


def test_iob2_to_bioes_allowed_rows(tmp_path):
    dm = _chunker(tmp_path, train_scheme="bioes")
    tags = list(dm.spec.vocabularies.tags)
    # B-NP before an unknown may be S-NP, I-NP after one may start a chunk (then S-NP): the
    # vocabulary holds the tags known tokens may have, and no I-NP (no chunk is 3 long).
    assert tags == ["B-NP", "B-VP", "E-NP", "O", "S-NP", "S-VP"]
    first = dm.encode("train")[0]  # He/B-NP reckons/B-VP the/_ deficit/I-NP ./O
    rows = [{tags[j] for j in np.flatnonzero(row)} for row in first.allowed]
    assert rows[:2] == [{"S-NP"}, {"B-VP", "S-VP"}]
    assert rows[2] == set(tags)
    assert rows[3] == {"E-NP", "S-NP"}  # I-NP before O: ends a chunk, begun or not
    assert rows[4] == {"O"}
    assert first.tags.tolist() == [tags.index("S-NP"), -2, -2, -2, tags.index("O")]


def test_unseen_known_tags_allow_everything():
    tags = Vocabulary(["B-NP", "I-NP", "O"], pad=None, unk=None)
    vocab = Vocabularies(words=Vocabulary([]), tags=tags, tag_scheme="iob2", corpus_scheme="iob2")
    encoder = GoldEncoder(vocab, "_")
    ids, allowed = encoder(("B-PP", "_", "O"))
    assert ids.tolist() == [UNSEEN_TARGET, UNKNOWN_TARGET, 2]
    assert allowed[0].all() and allowed[1].all()
    assert encoder.unseen == {"B-PP": 1} and encoder.known_tokens == 2


# -- batches ---------------------------------------------------------------------------------
def test_batches_of_fully_tagged_data_are_unchanged(tmp_path):
    with_marker = _chunker(tmp_path, FULL_CHUNKS)
    without = _chunker(tmp_path, FULL_CHUNKS, missing_tag=None)
    assert with_marker.spec.vocabularies == without.spec.vocabularies
    for split in ("train", "val"):
        ours, theirs = (collate(dm.encode(split)) for dm in (with_marker, without))
        today = {"words", "lengths", "mask", "index", "tags", "chars", "gold"}
        assert set(ours) == set(theirs) == today
        for key, value in ours.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, theirs[key]), key
            else:
                assert value == theirs[key], key


def test_collate_emits_allowed_only_when_a_sentence_needs_it(tmp_path):
    dm = _chunker(tmp_path)
    encoded = dm.encode("val")
    full = [s for s in encoded if s.allowed is None]
    assert "allowed" not in collate(full)
    batch = collate(encoded)
    allowed, tags, mask = batch["allowed"], batch["tags"], batch["mask"]
    num_tags = len(dm.spec.vocabularies.tags)
    assert allowed.shape == (*tags.shape, num_tags) and allowed.dtype == torch.bool
    assert allowed[~mask].all()  # padding
    for row, sentence in enumerate(encoded):
        n = len(sentence.words)
        if sentence.allowed is not None:
            assert torch.equal(allowed[row, :n], torch.from_numpy(sentence.allowed))
        else:
            one_hot = torch.nn.functional.one_hot(tags[row, :n], num_tags).bool()
            assert torch.equal(allowed[row, :n], one_hot)
    assert (tags == UNKNOWN_TARGET).sum() == 5
    assert set(tags[mask].tolist()) - set(range(num_tags)) == {UNKNOWN_TARGET}
    assert (tags[~mask] == PAD_TARGET).all()


def test_the_loaders_carry_allowed(tmp_path):
    dm = _chunker(tmp_path)
    dm.setup("fit")
    (batch,) = list(dm.train_dataloader())
    assert batch["allowed"].shape[0] == 3


# -- metrics ---------------------------------------------------------------------------------
def test_token_accuracy_skips_and_counts_unknown_ids():
    metric = TokenAccuracy()
    target = torch.tensor([[0, UNKNOWN_TARGET, 1, PAD_TARGET], [UNKNOWN_TARGET, 2, 2, 0]])
    preds = torch.tensor([[0, 0, 0, 0], [2, 2, 1, 0]])
    metric.update(preds, target)
    assert metric.compute().item() == pytest.approx(3 / 5)
    assert metric.skipped_total() == 2 and int(metric.skipped) == 2


def test_token_accuracy_skips_the_marker_in_strings():
    metric = TokenAccuracy(missing_tag="-")
    metric.update_strings([["B-NP", "I-NP", "O"]], [["B-NP", "-", "B-VP"]])
    assert metric.compute().item() == pytest.approx(1 / 2)
    assert metric.skipped_total() == 1
    plain = TokenAccuracy(missing_tag=None)
    plain.update_strings([["_", "O"]], [["_", "O"]])
    assert plain.compute().item() == 1.0 and plain.skipped_total() == 0


def test_span_f1_leaves_out_sentences_with_unknown_gold():
    metric = SpanF1(["O", "B-NP", "I-NP"], "iob2")
    preds = [["B-NP", "I-NP", "O"], ["B-NP", "O"], ["B-NP"]]
    golds = [["B-NP", "I-NP", "O"], ["B-NP", "_"], ["_"]]
    metric.update_strings(preds, golds)
    assert metric.compute()["f1"].item() == 1.0
    assert metric.skipped_total() == 2
    assert "skipped: 2 sentences with unknown gold tags" in format_span_report(metric)


def test_span_f1_leaves_out_rows_with_unknown_target_ids():
    metric = SpanF1(["O", "B-NP", "I-NP"], "iob2")
    preds = torch.tensor([[1, 2, 0], [1, 1, 0]])
    target = torch.tensor([[1, 2, 0], [1, UNKNOWN_TARGET, PAD_TARGET]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    metric.update(preds, target, mask)
    assert metric.compute()["f1"].item() == 1.0
    assert metric.skipped_total() == 1
    assert int(metric.gold.sum()) == 1
