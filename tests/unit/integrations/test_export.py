"""``seqtag export``: TorchScript and ONNX files that tag like ``SequenceTagger.tag()``.

Text is encoded here with a small pure-Python encoder that reads only the exported
``.vocab.json`` and follows its documented rules, the way a user without seqtag would.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import DATA, head_sentences

from seqtag.cli.export import main
from seqtag.data.datamodule import TaggingDataModule
from seqtag.data.io.formats import read_conllu
from seqtag.errors import CheckpointError
from seqtag.integrations.export import ExportedTagger, export
from seqtag.prediction.writer import PredictionWriter
from seqtag.training.module import SequenceTagger

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


pytestmark = pytest.mark.usefixtures("one_thread")


# -- a pure-Python encoder that knows only the JSON ---------------------------------------


def _word_id(vocab: dict, index: dict[str, int], token: str) -> int:
    if vocab["lowercase"]:
        token = token.lower()
    digits = str.maketrans("0123456789", "0000000000")
    for form in (token, token.lower(), token.translate(digits), token.lower().translate(digits)):
        if form in index:
            return index[form]
    if vocab["word_unknown_shapes"] is None:
        return vocab["word_unk_id"]
    return vocab["word_unknown_shapes"][_shape(token)]


def _shape(token: str) -> str:
    """The unknown-word shape, written from the JSON's rule text alone."""
    letter = any(c.isalpha() for c in token)
    digit = any(c.isdigit() for c in token)
    if not letter:
        return "number" if digit else "punctuation"
    if digit:
        return "alphanumeric"
    if token.islower():
        case = "lower"
    elif token.isupper():
        case = "upper"
    elif token[0].isupper() and not any(c.isupper() for c in token[1:]):
        case = "title"
    else:
        case = "mixed"
    return case + ("-hyphen" if "-" in token else "")


def _char_ids(vocab: dict, index: dict[str, int], token: str) -> list[int]:
    limit = vocab["max_word_length"]
    if len(token) > limit:
        token = token[: limit // 2] + token[len(token) - (limit - limit // 2) :]
    return [index.get(c, vocab["char_unk_id"]) for c in token]


def encode(vocab: dict, sentences: list[list[str]]) -> dict[str, np.ndarray]:
    """The model inputs for a batch of non-empty sentences, from the JSON alone."""
    words = {w: i for i, w in enumerate(vocab["words"])}
    size, longest = len(sentences), max(len(s) for s in sentences)
    inputs = {
        "words": np.full((size, longest), vocab["word_pad_id"], dtype=np.int64),
        "lengths": np.array([len(s) for s in sentences], dtype=np.int64),
    }
    for row, sentence in enumerate(sentences):
        inputs["words"][row, : len(sentence)] = [_word_id(vocab, words, t) for t in sentence]
    if vocab["chars"] is not None:
        chars = {c: i for i, c in enumerate(vocab["chars"])}
        encoded = [[_char_ids(vocab, chars, t) for t in s] for s in sentences]
        widest = max(len(w) for s in encoded for w in s)
        inputs["chars"] = np.full((size, longest, widest), vocab["char_pad_id"], dtype=np.int64)
        for row, sentence in enumerate(encoded):
            for col, word in enumerate(sentence):
                inputs["chars"][row, col, : len(word)] = word
    return inputs


def tag_batches(run, vocab: dict, sentences: list[list[str]], batch_size: int) -> list[list[str]]:
    """Tag strings per sentence: ``run(inputs) -> tag ids [B, T]``, batched by length."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out: list[list[str]] = [[] for _ in sentences]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        inputs = encode(vocab, [sentences[i] for i in rows])
        ids = np.asarray(run(inputs))
        assert ids.shape == inputs["words"].shape
        for row, i in enumerate(rows):
            n = len(sentences[i])
            assert (ids[row, n:] == -1).all()
            out[i] = [vocab["tags"][t] for t in ids[row, :n]]
    return out


def onnx_runner(path: Path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda inputs: session.run(["tags"], {n: inputs[n] for n in names})[0]


def torchscript_runner(path: Path, vocab: dict):
    module = torch.jit.load(str(path))
    names = vocab["inputs"]
    return lambda inputs: module(*(torch.from_numpy(inputs[n]) for n in names)).numpy()


# -- a tiny corpus and tiny models ----------------------------------------------------------

NAMES = ["Anna", "John", "Maria", "Peter", "Smith", "Jones"]
NOUNS = ["cat", "dog", "house", "car", "tree"]
VERBS = ["saw", "met", "likes", "sold", "painted"]
NUMBERS = ["3", "12", "00", "1984"]


def _corpus(seed: int, count: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        person = [(rng.choice(NAMES[:4]), "B-PER")]
        if rng.random() < 0.5:
            person.append((rng.choice(NAMES[4:]), "I-PER"))
        thing = [(rng.choice(["the", "a", "The"]), "O"), (rng.choice(NOUNS), "O")]
        if rng.random() < 0.4:
            thing.insert(1, (rng.choice(NUMBERS), "B-NUM"))
        verb = [(rng.choice(VERBS), "O")]
        sentence = person + verb + thing if rng.random() < 0.6 else thing + verb + person
        sentences.append([*sentence, (".", "O")])
    return sentences


#: Text to tag: unseen words, case and digit variants, a word longer than max_word_length,
#: unseen characters, one-token sentences and a long sentence (exercises padding everywhere).
TEXT = [
    ["Anna", "saw", "the", "cat", "."],
    ["JOHN", "Jones", "met", "a", "47", "dog", "."],
    ["The", "Zebra", "painted", "Pétersonovich-Smithsonian", "."],
    ["Maria"],
    ["cat"],
    ["a", "tree", "sold", "2024", "houses", "to", "Peter", "Smith", "and", "Maria", "Jones", "."],
    ["Дом", "likes", "00", "cars", "!"],
    ["the", "dog", "."],
]

MODELS = {
    "softmax": dict(decoder="softmax", char_features="none", lowercase=True),
    "softmax-cnn-gru2": dict(
        decoder="softmax", char_features="cnn", rnn_type="gru", num_layers=2, lowercase=False
    ),
    "crf": dict(decoder="crf", char_features="none", lowercase=False),
    "crf-cnn": dict(decoder="crf", char_features="cnn", lowercase=True),
    "crf-lstm": dict(decoder="crf", char_features="lstm", lowercase=False),
}


class _QuickTagger(SequenceTagger):
    """Learns the tiny corpus in a few dozen steps; its checkpoints are ordinary ones."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.02)


def _train(tmp_path: Path, name: str, options: dict) -> Path:
    corpus = tmp_path / "train.txt"
    if not corpus.exists():
        blocks = ["\n".join(f"{w} {t}" for w, t in s) for s in _corpus(0, 24)]
        corpus.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    options = dict(options)
    lowercase = options.pop("lowercase")
    pl.seed_everything(0)
    datamodule = TaggingDataModule(
        train_path=str(corpus),
        format="columns",
        tag_scheme="iob2",
        batch_size=4,
        lowercase=lowercase,
        max_word_length=12,
    )
    model = _QuickTagger(
        hidden_size=16,
        embedding_dim=16,
        char_dim=8,
        char_hidden_size=8,
        dropout=0.0,
        rare_word_dropout=0.25,
        **options,
    )
    trainer = pl.Trainer(
        max_epochs=15,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=datamodule)
    path = tmp_path / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export-models")
    return {name: _train(folder, name, options) for name, options in MODELS.items()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_exported_models_tag_like_seqtag(checkpoints, tmp_path, name):
    checkpoint = checkpoints[name]
    tagger = SequenceTagger.load_from_checkpoint(checkpoint, map_location="cpu")
    expected = [[tag for tag, _ in sentence] for sentence in tagger.tag(TEXT)]
    assert len({tag for sentence in expected for tag in sentence}) >= 3  # it learned something
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        output = tmp_path / f"{name}{suffix}"
        export(str(checkpoint), fmt, str(output))
        vocab = json.loads(Path(f"{output}.vocab.json").read_text(encoding="utf-8"))
        assert vocab["model_format"] == fmt and vocab["decoder"] == MODELS[name]["decoder"]
        assert vocab["inputs"] == (
            ["words", "lengths", "chars"]
            if MODELS[name]["char_features"] != "none"
            else ["words", "lengths"]
        )
        run = onnx_runner(output) if fmt == "onnx" else torchscript_runner(output, vocab)
        for batch_size in (3, len(TEXT)):  # different batch shapes through one file
            assert tag_batches(run, vocab, TEXT, batch_size) == expected, (fmt, batch_size)


@pytest.mark.parametrize("name", ["crf-lstm", "softmax-cnn-gru2"])
def test_the_export_holds_the_models_own_modules(checkpoints, name):
    """Every parameter of the exported module is one of the tagger's, not a copy."""
    tagger = SequenceTagger.load_from_checkpoint(checkpoints[name], map_location="cpu").tagger
    exported = ExportedTagger(tagger)
    mine = {id(p) for p in tagger.parameters()}
    assert all(id(p) in mine for p in exported.parameters())
    assert exported.char_encoder is tagger.encoder.char_encoder
    assert exported.rnn is tagger.encoder.rnn


def test_vocabulary_sidecar_describes_the_encoding(checkpoints, tmp_path):
    output = tmp_path / "model.onnx"
    export(str(checkpoints["crf-cnn"]), "onnx", str(output))
    vocab = json.loads(Path(f"{output}.vocab.json").read_text(encoding="utf-8"))
    tagger = SequenceTagger.load_from_checkpoint(checkpoints["crf-cnn"], map_location="cpu")
    vocabularies = tagger.vocabularies
    assert vocab["words"] == list(vocabularies.words.items)
    assert vocab["words"][vocab["word_pad_id"]] == "<pad>"
    assert vocab["words"][vocab["word_unk_id"]] == "<unk>"
    assert vocab["tags"] == list(vocabularies.tags.items)
    assert vocab["chars"] == list(vocabularies.chars.items)
    assert vocab["lowercase"] is True and vocab["max_word_length"] == 12
    assert vocab["word_fallback"] == ["exact", "lowercase", "digits", "lowercase+digits"]
    assert vocab["tag_scheme"] == vocab["corpus_scheme"] == "iob2"
    assert any("digit" in rule for rule in vocab["encoding"])
    # The encoder above agrees with seqtag's own on every word and character.
    tokens = [t for s in TEXT for t in s]
    inputs = encode(vocab, [tokens])
    assert inputs["words"][0].tolist() == vocabularies.encode_words(tokens)
    chars = vocabularies.encode_chars(tokens)
    for col, word in enumerate(chars):
        assert inputs["chars"][0, col, : len(word)].tolist() == word


def test_exported_files_run_without_seqtag(checkpoints, tmp_path):
    onnx_file, script_file = tmp_path / "m.onnx", tmp_path / "m.pt"
    export(str(checkpoints["crf-cnn"]), "onnx", str(onnx_file))
    export(str(checkpoints["crf-cnn"]), "torchscript", str(script_file))
    tagger = SequenceTagger.load_from_checkpoint(checkpoints["crf-cnn"], map_location="cpu")
    expected = [[tag for tag, _ in sentence] for sentence in tagger.tag(TEXT)]
    # A fresh interpreter in which importing seqtag fails.
    program = f"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "seqtag":
            raise ImportError("seqtag must not be needed")
sys.meta_path.insert(0, Block())
import numpy as np, onnxruntime, torch
inputs = {{k: np.array(v, dtype=np.int64) for k, v in json.loads(sys.stdin.read()).items()}}
session = onnxruntime.InferenceSession({str(onnx_file)!r})
a = session.run(["tags"], inputs)[0]
module = torch.jit.load({str(script_file)!r})
b = module(*(torch.from_numpy(inputs[n]) for n in ("words", "lengths", "chars"))).numpy()
assert "seqtag" not in sys.modules
print(json.dumps([a.tolist(), b.tolist()]))
"""
    vocab = json.loads(Path(f"{onnx_file}.vocab.json").read_text(encoding="utf-8"))
    inputs = encode(vocab, TEXT)
    result = subprocess.run(
        [sys.executable, "-c", program],
        input=json.dumps({k: v.tolist() for k, v in inputs.items()}),
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    for ids in json.loads(result.stdout):
        got = [[vocab["tags"][t] for t in row[: len(s)]] for row, s in zip(ids, TEXT, strict=True)]
        assert got == expected


def test_command_line(checkpoints, tmp_path, capsys):
    output = tmp_path / "out" / "tagger.pt"
    checkpoint = str(checkpoints["softmax"])
    main(["--ckpt_path", checkpoint, "--format", "torchscript", "--output", str(output)])
    assert output.is_file() and Path(f"{output}.vocab.json").is_file()
    assert "tagger.pt" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt_path", str(tmp_path / "missing.ckpt"), "--format", "onnx", "--output", "x"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("seqtag: error: ")
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt_path", checkpoint, "--format", "tflite", "--output", "x"])
    assert exit_info.value.code == 2


def test_a_checkpoint_that_is_not_seqtags_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a seqtag checkpoint"):
        export(str(path), "onnx", str(tmp_path / "x.onnx"))
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a seqtag checkpoint"):
        export(str(path), "torchscript", str(tmp_path / "x.pt"))


# -- the real thing ----------------------------------------------------------------------


@pytest.mark.slow
def test_export_agrees_with_seqtag_on_the_ewt_test_set(tmp_path):
    """A CRF tagger with character features, trained briefly, on all 2,077 test sentences."""
    ewt = DATA / "ud_en_ewt"
    train = head_sentences(ewt / "en_ewt-ud-train.conllu.gz", tmp_path / "train.conllu", 2000)
    pl.seed_everything(0)
    datamodule = TaggingDataModule(train_path=str(train), batch_size=32, min_freq=2)
    model = _QuickTagger(
        hidden_size=64, embedding_dim=50, decoder="crf", char_features="cnn", char_dim=16
    )
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=datamodule)
    checkpoint = tmp_path / "ewt.ckpt"
    trainer.save_checkpoint(checkpoint)

    test = read_conllu(ewt / "en_ewt-ud-test.conllu.gz")
    sentences = [list(s.tokens) for s in test]
    assert len(sentences) == 2077
    tagger = SequenceTagger.load_from_checkpoint(checkpoint, map_location="cpu")
    expected = [[tag for tag, _ in sentence] for sentence in tagger.tag(sentences)]
    pairs = [
        pair
        for sentence, tags in zip(test, expected, strict=True)
        for pair in zip(sentence.tags, tags, strict=True)
    ]
    accuracy = sum(gold == predicted for gold, predicted in pairs) / len(pairs)
    assert accuracy > 0.6  # a real, if briefly trained, tagger
    # What `seqtag predict` writes (Trainer.predict + PredictionWriter) is the reference too.
    written = tmp_path / "predicted.conll"
    predict_data = TaggingDataModule(
        predict_path=str(ewt / "en_ewt-ud-test.conllu.gz"), format="conllu"
    )
    pl.Trainer(
        logger=False,
        enable_progress_bar=False,
        callbacks=[PredictionWriter(output=str(written))],
        default_root_dir=tmp_path,
    ).predict(tagger, datamodule=predict_data, return_predictions=False)
    blocks = written.read_text(encoding="utf-8").strip("\n").split("\n\n")
    from_cli = [[line.split("\t")[1] for line in block.splitlines()] for block in blocks]
    assert from_cli == expected
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        output = tmp_path / f"ewt{suffix}"
        export(str(checkpoint), fmt, str(output))
        vocab = json.loads(Path(f"{output}.vocab.json").read_text(encoding="utf-8"))
        run = onnx_runner(output) if fmt == "onnx" else torchscript_runner(output, vocab)
        got = tag_batches(run, vocab, sentences, batch_size=256)
        mismatched = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
        assert not mismatched, f"{fmt}: {len(mismatched)} sentences differ, first {mismatched[:5]}"
