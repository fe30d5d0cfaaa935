"""Sentences held in Python memory: TaggingDataModule splits, TokenCollate, tag(spans=True).

What a user of the Python API notices: a model trained from a list (of pairs or of dicts, a
``datasets.Dataset``, a DataFrame) is the model trained from the same sentences in a file;
a malformed sentence is one line naming the split and its position; ``trainer.predict`` over
a plain DataLoader of token lists gives the DataModule's prediction dicts.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import REPO, run_seqtag
from torch.utils.data import DataLoader

from seqtag import SequenceTagger, TaggingDataModule, TokenCollate, in_input_order
from seqtag.data.io.formats import read_corpus
from seqtag.errors import ConfigError, CorpusFormatError

pytestmark = pytest.mark.usefixtures("one_thread")

NER_FILE = REPO / "tests/fixtures/tiny.conll2003.txt"

PAIRS = [
    (["the", "cat", "sleeps"], ["DET", "NOUN", "VERB"]),
    (["a", "dog", "barks", "loudly"], ["DET", "NOUN", "VERB", "ADV"]),
    (["the", "dog", "sleeps"], ["DET", "NOUN", "VERB"]),
    (["a", "cat", "runs", "."], ["DET", "NOUN", "VERB", "PUNCT"]),
    (["dogs", "bark"], ["NOUN", "VERB"]),
]
DEV = [(["the", "cat", "barks"], ["DET", "NOUN", "VERB"]), (["a", "dog"], ["DET", "NOUN"])]


def _columns_file(path: Path, pairs) -> str:
    blocks = ["\n".join(f"{t} {g}" for t, g in zip(*pair, strict=True)) for pair in pairs]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return str(path)


def _quiet_trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _train(train, val, **data) -> tuple[SequenceTagger, TaggingDataModule]:
    pl.seed_everything(7)
    dm = TaggingDataModule(train_path=train, val_path=val, batch_size=2, **data)
    model = SequenceTagger(hidden_size=8, char_features="cnn", char_hidden_size=4)
    _quiet_trainer(max_epochs=2).fit(model, datamodule=dm)
    return model, dm


def _same_weights(a: SequenceTagger, b: SequenceTagger) -> None:
    first, second = a.state_dict(), b.state_dict()
    assert first.keys() == second.keys()
    for name, value in first.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, second[name]), name


def _as_dicts(pairs, tokens="tokens", tags="tags"):
    return [{tokens: t, tags: g, "id": str(i)} for i, (t, g) in enumerate(pairs)]


def test_a_list_of_pairs_or_dicts_trains_the_model_a_file_trains(tmp_path):
    train = _columns_file(tmp_path / "train.txt", PAIRS)
    dev = _columns_file(tmp_path / "dev.txt", DEV)
    from_file, _ = _train(train, dev, format="columns")
    from_pairs, dm = _train(PAIRS, DEV)
    from_dicts, _ = _train(
        _as_dicts(PAIRS, "words", "pos"),
        _as_dicts(DEV, "words", "pos"),
        token_key="words",
        tag_key="pos",
    )
    _same_weights(from_file, from_pairs)
    _same_weights(from_file, from_dicts)
    sentences = [["the", "dog", "runs"], ["a", "cat"]]
    assert from_pairs.tag(sentences) == from_file.tag(sentences)
    # The sentences are data, not settings: the hyper-parameters hold None for them.
    assert dm.hparams.train_path is None and dm.hparams.val_path is None


def test_a_checkpoint_of_a_model_trained_from_memory_loads_and_holds_no_sentences(tmp_path):
    pl.seed_everything(0)
    dm = TaggingDataModule(train_path=PAIRS, val_path=DEV, test_path=DEV, batch_size=2)
    model = SequenceTagger(hidden_size=8)
    trainer = _quiet_trainer(max_epochs=1, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "memory.ckpt"
    trainer.save_checkpoint(path)
    stored = torch.load(path, weights_only=True)
    data = stored["datamodule_hyper_parameters"]
    assert data["train_path"] is None and data["val_path"] is None
    assert data["token_key"] == "tokens"
    loaded = SequenceTagger.load_from_checkpoint(path)
    assert loaded.tag([["the", "cat"]]) == model.eval().tag([["the", "cat"]])
    scores = _quiet_trainer().test(loaded, datamodule=dm, verbose=False)
    assert 0.0 <= scores[0]["test_acc"] <= 1.0


def test_val_from_train_holds_out_the_last_sentences_of_a_list():
    dm = TaggingDataModule(train_path=PAIRS, val_from_train=2)
    assert [s.tokens for s in dm.sentences("val")] == [tuple(t) for t, _ in PAIRS[-2:]]
    assert len(dm.sentences("train")) == 3


def test_a_dataframe_trains_as_a_list_of_dicts():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"tokens": [t for t, _ in PAIRS], "tags": [g for _, g in PAIRS]})
    dev = pandas.DataFrame({"tokens": [t for t, _ in DEV], "tags": [g for _, g in DEV]})
    from_frame, _ = _train(frame, dev)
    from_pairs, _ = _train(PAIRS, DEV)
    _same_weights(from_frame, from_pairs)


def test_a_hugging_face_dataset_trains_and_class_ids_read_as_names():
    datasets = pytest.importorskip("datasets")
    rows = _as_dicts(PAIRS)
    from_list, _ = _train(
        datasets.Dataset.from_list(rows), datasets.Dataset.from_list(_as_dicts(DEV))
    )
    from_pairs, _ = _train(PAIRS, DEV)
    _same_weights(from_list, from_pairs)
    # NER and POS sets on the hub store tags as class ids (ClassLabel): read as their names.
    names = sorted({tag for _, tags in PAIRS for tag in tags})
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "pos_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    encoded = datasets.Dataset.from_dict(
        {
            "tokens": [t for t, _ in PAIRS],
            "pos_tags": [[names.index(tag) for tag in tags] for _, tags in PAIRS],
        },
        features=features,
    )
    dm = TaggingDataModule(train_path=encoded, tag_key="pos_tags")
    assert [s.tags for s in dm.sentences("train")] == [tuple(g) for _, g in PAIRS]


@pytest.mark.parametrize(
    ("train", "options", "message"),
    [
        ([(["a", "b", "c", "d"], ["X", "Y", "Z"])], {}, "train sentence 0: 4 tokens but 3 tags"),
        ([*PAIRS, (["a", None], ["X", "Y"])], {}, "train sentence 5: token 2 is a NoneType"),
        ([*PAIRS, (["a", " "], ["X", "Y"])], {}, "train sentence 5: token 2, ' ', is only"),
        ([(["a"], [3])], {}, "train sentence 0: tag 1 is a int (3); tags must be strings: class"),
        ([(["a"], ["B X"])], {}, "train sentence 0: tag 1, 'B X', is empty or holds whitespace"),
        ([(["a"], [])], {}, "train sentence 0: 1 tokens but 0 tags"),
        ([([], [])], {}, "train sentence 0: has no tokens"),
        ([["the", "cat"]], {}, "train sentence 0: is a list of 2 items, not a (tokens, tags)"),
        (["the cat"], {}, "train sentence 0: is a str, not a sentence"),
        ([("the cat", ["X"])], {}, "train sentence 0: is a tuple of 2 items"),
        ([{"words": ["a"], "tags": ["X"]}], {}, "train sentence 0: has no 'tokens' field (it has"),
        ([{"tokens": ["a"], "ner": ["O"]}], {}, "set data.tag_key to the field's name"),
        ([], {}, "data.train_path: holds no sentences"),
        (
            [(["Paris"], ["B-LOC"]), (["in", "Rome"], ["O", "X-LOC"])],
            {"tag_scheme": "iob2"},
            "train sentence 1: ",
        ),
        (
            [(["a"], ["_"]), (["b"], ["_"])],
            {},
            "train split (in memory): no sentence has a known tag",
        ),
    ],
)
def test_a_malformed_sentence_is_one_line_naming_the_split_and_position(train, options, message):
    dm = TaggingDataModule(train_path=train, **options)
    with pytest.raises(CorpusFormatError) as caught:
        dm.spec  # noqa: B018  (reading the training split)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_other_splits_name_themselves():
    dm = TaggingDataModule(train_path=PAIRS, test_path=[(["a", "b"], ["DET"])])
    with pytest.raises(CorpusFormatError, match=r"^test sentence 0: 2 tokens but 1 tags$"):
        dm.sentences("test")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"train": PAIRS, "test": DEV}, "data.train_path is a mapping ('train', 'test'), not a"),
        ((pair for pair in PAIRS), "data.train_path is a one-shot iterator (generator)"),
        (b"train.conllu", "data.train_path is bytes"),
        (5, "data.train_path is a int: give a file path, or give a list of (tokens, tags)"),
    ],
)
def test_a_split_that_is_neither_a_path_nor_sentences_is_refused_at_once(value, message):
    with pytest.raises(ConfigError) as caught:
        TaggingDataModule(train_path=value)
    assert message in str(caught.value)


def _ner_model(tmp_path: Path) -> tuple[SequenceTagger, pl.Trainer]:
    pl.seed_everything(0)
    dm = TaggingDataModule(train_path=str(NER_FILE), format="columns", tag_scheme="iob2")
    model = SequenceTagger(hidden_size=8, decoder="crf")
    trainer = _quiet_trainer(max_epochs=1, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    return model, trainer


def test_trainer_predict_over_raw_token_lists_gives_the_datamodule_dicts(tmp_path):
    model, trainer = _ner_model(tmp_path)
    sentences = [s.tokens for s in read_corpus(NER_FILE, "columns")]
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
    from_file = TaggingDataModule(predict_path=str(text), predict_format="text")
    expected = in_input_order(trainer.predict(model, datamodule=from_file))
    raw = [list(s) for s in sentences]
    loader = DataLoader(raw, batch_size=2, collate_fn=TokenCollate(model))
    batches = trainer.predict(model, loader)
    assert [len(batch) for batch in batches] == [2] * (len(raw) // 2) + [1] * (len(raw) % 2)
    got = in_input_order(batches)
    assert [s["index"] for s in got] == list(range(len(raw)))
    assert all(s["spans"] is not None for s in got)
    _same_predictions(got, expected)
    from_memory = TaggingDataModule(predict_path=raw)
    _same_predictions(in_input_order(trainer.predict(model, datamodule=from_memory)), expected)
    # Pairs and dicts are read for their tokens; their tags are ignored, as a file's are.
    pairs = [(tokens, ["O"] * len(tokens)) for tokens in raw]
    from_pairs = TaggingDataModule(predict_path=pairs)
    _same_predictions(in_input_order(trainer.predict(model, datamodule=from_pairs)), expected)


def _same_predictions(got, expected) -> None:
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine["index"] == theirs["index"]
        assert list(mine["tokens"]) == list(theirs["tokens"])
        assert mine["tags"] == theirs["tags"]
        assert mine["confidences"] == pytest.approx(theirs["confidences"], abs=1e-5)
        assert [(s["start"], s["end"], s["type"]) for s in mine["spans"]] == [
            (s["start"], s["end"], s["type"]) for s in theirs["spans"]
        ]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([["a", None]], "TokenCollate: sentence 0, token 2 is a NoneType (None)"),
        (["The cat"], "TokenCollate: sentence 0 is a str: each item"),
        ([["a"], []], "TokenCollate: sentence 1 has no tokens"),
        ([["a", ""]], "TokenCollate: sentence 0, token 2, '', is empty"),
    ],
)
def test_token_collate_refuses_what_tag_refuses_in_one_line(items, message):
    vocabularies = TaggingDataModule(train_path=PAIRS).spec.vocabularies
    with pytest.raises(ConfigError) as caught:
        TokenCollate(vocabularies)(items)
    assert message in str(caught.value)


def test_token_collate_refuses_worker_processes():
    vocabularies = TaggingDataModule(train_path=PAIRS).spec.vocabularies
    loader = DataLoader(
        [["a", "cat"]] * 4, batch_size=2, num_workers=1, collate_fn=TokenCollate(vocabularies)
    )
    with pytest.raises(ConfigError, match="use DataLoader\\(num_workers=0\\)"):
        next(iter(loader))


def test_tag_with_spans_gives_predict_dicts(tmp_path):
    model, trainer = _ner_model(tmp_path)
    sentences = [["EU", "rejects", "German", "call", "."], [], ["Peter", "Blackburn"]]
    tagged = model.tag(sentences, spans=True)
    plain = model.tag(sentences)
    assert [s["tags"] for s in tagged] == [[t for t, _ in s] for s in plain]
    assert tagged[1] == {
        "index": 1,
        "tokens": [],
        "tags": [],
        "confidences": [],
        "spans": [],
        "uncertainty": None,
    }
    loader = DataLoader([sentences[0], sentences[2]], batch_size=2, collate_fn=TokenCollate(model))
    predicted = in_input_order(trainer.predict(model, loader))
    _same_predictions([{**tagged[0], "index": 0}, {**tagged[2], "index": 1}], predicted)
    streamed = list(model.tag_stream(iter(sentences), chunk_size=2, spans=True))
    assert [s["index"] for s in streamed] == [0, 1, 2]
    assert [s["tags"] for s in streamed] == [s["tags"] for s in tagged]


def test_tag_with_spans_on_a_pos_model_gives_none_spans_as_predict_does():
    pl.seed_everything(0)
    model = SequenceTagger(hidden_size=8)
    _quiet_trainer(max_epochs=1).fit(model, datamodule=TaggingDataModule(train_path=PAIRS))
    tagged = model.tag([["the", "cat"]], spans=True)
    assert tagged[0]["spans"] is None and tagged[0]["tags"] == [
        t for t, _ in model.tag([["the", "cat"]])[0]
    ]
    predicted = _quiet_trainer().predict(
        model, DataLoader([["the", "cat"]], collate_fn=TokenCollate(model))
    )
    assert predicted[0][0]["spans"] is None


def test_the_command_line_still_takes_paths(tmp_path):
    """The in-memory type in the signature leaves the command line's paths as they were."""
    train = _columns_file(tmp_path / "train.txt", PAIRS)
    result = run_seqtag(
        "fit",
        "--print_config",
        f"--data.train_path={train}",
        "--data.format=columns",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"train_path: {train}" in result.stdout
    assert "token_key: tokens" in result.stdout


def test_several_passes_over_an_in_memory_predict_split(tmp_path):
    """Each trainer.predict reads the list again (a list, not a one-shot iterator)."""
    model, trainer = _ner_model(tmp_path)
    dm = TaggingDataModule(predict_path=[["EU", "rejects"], ["Peter"]], predict_chunk_size=1)
    first, second = (in_input_order(trainer.predict(model, datamodule=dm)) for _ in range(2))
    assert [s["tags"] for s in first] == [s["tags"] for s in second]
    assert list(itertools.chain.from_iterable(s["tokens"] for s in first)) == [
        "EU",
        "rejects",
        "Peter",
    ]
