"""Confidence you can act on: spans with their confidence, dropping unsure spans, and choosing
the sentences to annotate next, through ``seqtag predict`` and ``trainer.predict``."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import REPO, train_checkpoint

from seqtag import PredictionOptions, SequenceTagger, TaggingDataModule, in_input_order
from seqtag.cli.main import main
from seqtag.data.batching import collate, encode_sentence
from seqtag.data.io.formats import read_corpus
from seqtag.data.schemes import get_spans
from seqtag.errors import ConfigError
from seqtag.prediction.output import OutputSink
from seqtag.prediction.uncertain import MostUncertain, UncertainOutput
from seqtag.prediction.writer import PredictionWriter

pytestmark = pytest.mark.usefixtures("one_thread")

NOUNS = ["dog", "cat", "house", "tree", "car", "bird", "river", "idea", "song"]
WORDS = {
    "DT": ["the", "a", "this", "every"],
    "JJ": ["big", "red", "old", "quick", "green", "sad"],
    "VB": ["sees", "likes", "runs", "finds", "eats", "near"],
    "IN": ["in", "on", "near", "under", "like"],
}


def _noun_phrase(rng: random.Random) -> list[tuple[str, str, str]]:
    words = [(rng.choice(WORDS["DT"]), "DT")]
    words += [(rng.choice(WORDS["JJ"]), "JJ") for _ in range(rng.randint(0, 2))]
    words.append((rng.choice(NOUNS), "NN"))
    return [(w, pos, "B-NP" if i == 0 else "I-NP") for i, (w, pos) in enumerate(words)]


def _sentence(rng: random.Random) -> list[tuple[str, str, str]]:
    words = [*_noun_phrase(rng), (rng.choice(WORDS["VB"]), "VB", "B-VP"), *_noun_phrase(rng)]
    if rng.random() < 0.5:
        words += [(rng.choice(WORDS["IN"]), "IN", "B-PP"), *_noun_phrase(rng)]
    return [*words, (".", ".", "O")]


def _write_chunks(path: Path, count: int, seed: int) -> Path:
    """A CoNLL-2000-like file: ``word POS chunk`` lines, a blank line between sentences."""
    rng = random.Random(seed)
    blocks = ["\n".join(" ".join(row) for row in _sentence(rng)) for _ in range(count)]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("chunks")
    return {
        "train": _write_chunks(folder / "train.txt", 60, 1),
        "test": _write_chunks(folder / "test.txt", 23, 3),
    }


def _train(corpus: dict[str, Path], folder: Path, decoder: str, **data: object) -> Path:
    module = TaggingDataModule(
        train_path=str(corpus["train"]), format="columns", batch_size=8, **data
    )
    model = SequenceTagger(hidden_size=16, embedding_dim=16, decoder=decoder)
    return train_checkpoint(folder, module, model, epochs=6)


@pytest.fixture(scope="module")
def crf(corpus, tmp_path_factory) -> Path:
    """A chunker with a CRF, trained in BIOES from IOB2 files (output converted back)."""
    folder = tmp_path_factory.mktemp("crf")
    return _train(corpus, folder, "crf", tag_scheme="iob2", train_scheme="bioes")


@pytest.fixture(scope="module")
def softmax(corpus, tmp_path_factory) -> Path:
    return _train(corpus, tmp_path_factory.mktemp("softmax"), "softmax", tag_scheme="iob2")


@pytest.fixture(scope="module")
def pos(corpus, tmp_path_factory) -> Path:
    """A POS tagger (no tag scheme) on the same file's second column."""
    return _train(corpus, tmp_path_factory.mktemp("pos"), "softmax", tag_column=1)


def _predict(checkpoint: Path, source: Path, *extra: str, fmt: str = "columns") -> None:
    main(
        [
            "predict",
            f"--ckpt_path={checkpoint}",
            f"--data.predict_path={source}",
            f"--data.predict_format={fmt}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            *extra,
        ]
    )


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _trainer_predict(checkpoint: Path, source: Path, **flags: object) -> list[dict]:
    model = SequenceTagger.load_from_checkpoint(checkpoint)
    for name, value in flags.items():
        setattr(model, name, value)
    data = TaggingDataModule(predict_path=str(source), format="columns")
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    return in_input_order(trainer.predict(model, datamodule=data))


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqtag: error: "), lines
    return lines[0]


# -- 1. spans with their confidence -----------------------------------------------------------
@pytest.mark.parametrize("decoder", ["crf", "softmax"])
def test_jsonl_spans_are_the_chunks_of_the_tags(decoder, corpus, tmp_path, request):
    checkpoint = request.getfixturevalue(decoder)
    output = tmp_path / "out.jsonl"
    _predict(
        checkpoint, corpus["test"], f"--prediction.output={output}", "--prediction.format=jsonl"
    )
    records = _records(output)
    assert len(records) == 23
    assert sum(len(r["spans"]) for r in records) > 23
    for record in records:
        expected = [(t, s, e) for t, s, e in get_spans(record["tags"], "iob2")]
        assert [(s["type"], s["start"], s["end"]) for s in record["spans"]] == expected
        assert all(0.0 < s["confidence"] <= 1.0 for s in record["spans"])
    # The same numbers as trainer.predict's (rounded to 4 significant digits).
    direct = _trainer_predict(checkpoint, corpus["test"])
    for record, sentence in zip(records, direct, strict=True):
        assert record["tags"] == sentence["tags"]
        for written, exact in zip(record["spans"], sentence["spans"], strict=True):
            assert written["confidence"] == pytest.approx(exact["confidence"], rel=1e-3)


def test_trainer_predict_spans_are_exact_crf_marginals(crf, corpus):
    model = SequenceTagger.load_from_checkpoint(crf).eval()
    direct = _trainer_predict(crf, corpus["test"])
    sentence = next(s for s in direct if len(s["spans"]) >= 3)
    encoded = encode_sentence(model.vocabularies, 0, sentence["tokens"])
    batch = collate([encoded])
    with torch.inference_mode():
        emissions = model(batch)
        marginals = model.tagger.token_probabilities(emissions, batch["mask"])[0]
    # A one-token span's probability is bounded by the marginal of its tags at that token.
    for span in sentence["spans"]:
        assert 0.0 < span["confidence"] <= 1.0
        ids = [
            model.vocabularies.tags.index(f"{p}-{span['type']}")
            for p in ("B", "S", "I", "E")
            if f"{p}-{span['type']}" in model.vocabularies.tags
        ]
        assert span["confidence"] <= float(marginals[span["start"], ids].sum()) + 1e-5


def test_prediction_options_choose_what_trainer_predict_computes(crf, corpus):
    """One object says what predict_step adds to the tags; its defaults give everything."""
    full = _trainer_predict(crf, corpus["test"])
    assert all(s["confidences"] is not None and s["spans"] is not None for s in full)
    lean = _trainer_predict(
        crf,
        corpus["test"],
        prediction_options=PredictionOptions(confidences=False, spans=False, uncertainty=True),
    )
    assert [s["tags"] for s in lean] == [s["tags"] for s in full]
    assert all(s["confidences"] is None and s["spans"] is None for s in lean)
    assert all(0.0 <= s["uncertainty"] <= 1.0 for s in lean)
    assert any(s["uncertainty"] > 0.0 for s in lean)


def test_pos_output_is_unchanged(pos, corpus, tmp_path):
    output = tmp_path / "out.jsonl"
    _predict(pos, corpus["test"], f"--prediction.output={output}", "--prediction.format=jsonl")
    assert all(set(r) == {"tokens", "tags"} for r in _records(output))
    assert all(s["spans"] is None for s in _trainer_predict(pos, corpus["test"]))


# -- 2. min_confidence ----------------------------------------------------------------------------
def test_min_confidence_one_drops_every_unsure_span(softmax, corpus, tmp_path):
    direct = _trainer_predict(softmax, corpus["test"])
    unsure = [(i, s) for i, d in enumerate(direct) for s in d["spans"] if s["confidence"] < 1.0]
    assert unsure, "the tiny model should be unsure of some span"
    output, conll = tmp_path / "out.jsonl", tmp_path / "out.conll"
    options = ["--prediction.min_confidence=1.0", "--prediction.confidences=true"]
    _predict(
        softmax,
        corpus["test"],
        f"--prediction.output={output}",
        "--prediction.format=jsonl",
        *options,
    )
    _predict(softmax, corpus["test"], f"--prediction.output={conll}", *options)
    records = _records(output)
    for i, (record, sentence) in enumerate(zip(records, direct, strict=True)):
        expected = list(sentence["tags"])
        for j, span in unsure:
            if j == i:
                expected[span["start"] : span["end"]] = ["O"] * (span["end"] - span["start"])
        assert record["tags"] == expected
        assert all(s["confidence"] >= 1.0 for s in record["spans"])
        kept = [(t, s, e) for t, s, e in get_spans(expected, "iob2")]
        assert [(s["type"], s["start"], s["end"]) for s in record["spans"]] == kept
    blocks = conll.read_text(encoding="utf-8").rstrip("\n").split("\n\n")
    assert [[row.split("\t")[1] for row in b.split("\n")] for b in blocks] == [
        r["tags"] for r in records
    ]


def test_min_confidence_zero_changes_nothing(crf, corpus, tmp_path):
    outputs = []
    for extra in ([], ["--prediction.min_confidence=0"]):
        output = tmp_path / f"out{len(extra)}.jsonl"
        _predict(
            crf,
            corpus["test"],
            f"--prediction.output={output}",
            "--prediction.format=jsonl",
            "--prediction.confidences=true",
            *extra,
        )
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1]


def test_min_confidence_is_refused_for_a_pos_model(pos, corpus, tmp_path, capsys):
    output = tmp_path / "out.conll"
    with pytest.raises(SystemExit) as exit_info:
        _predict(
            pos, corpus["test"], f"--prediction.output={output}", "--prediction.min_confidence=0.5"
        )
    assert exit_info.value.code == 1
    assert "tags no spans" in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []  # no part left to block the next run
    _predict(pos, corpus["test"], f"--prediction.output={output}")
    assert output.exists()


@pytest.mark.parametrize(
    ("options", "code", "words"),
    [
        (["--prediction.min_confidence=1.5"], 2, "number in [0, 1]"),
        (["--prediction.min_confidence=-0.1"], 2, "number in [0, 1]"),
        (["--prediction.most_uncertain=0", "--prediction.uncertain_output=F"], 2, ">= 1"),
        (["--prediction.most_uncertain=3"], 1, "go together"),
        (["--prediction.uncertain_output=F"], 1, "go together"),
        (
            ["--prediction.most_uncertain=3", "--prediction.uncertain_output=OUT"],
            1,
            "is the output of --prediction.output",
        ),
        (
            ["--prediction.most_uncertain=3", "--prediction.uncertain_output=missing/F"],
            1,
            "does not exist",
        ),
    ],
)
def test_bad_values_and_combinations_are_one_line(
    softmax, corpus, tmp_path, capsys, options, code, words
):
    output = tmp_path / "out.conll"
    options = [
        o.replace("=OUT", f"={output}")
        .replace("=F", f"={tmp_path / 'F'}")
        .replace("=missing", f"={tmp_path / 'missing'}")
        for o in options
    ]
    with pytest.raises(SystemExit) as exit_info:
        _predict(softmax, corpus["test"], f"--prediction.output={output}", *options)
    assert exit_info.value.code == code
    line = _error_line(capsys)
    assert words in line
    assert not output.exists() and not list(tmp_path.glob("*.partial"))


def test_python_api_checks_the_options_too():
    with pytest.raises(
        ConfigError, match=r"prediction.min_confidence must be a number in \[0, 1\]"
    ):
        PredictionWriter(min_confidence=2.0)
    with pytest.raises(ConfigError, match="go together"):
        PredictionWriter(most_uncertain=2)


# -- 3. the sentences to annotate next ---------------------------------------------------------
def _uncertainties(checkpoint: Path, sentences: list[tuple[str, ...]]) -> list[float]:
    """``1 -`` the best path's probability, one sentence at a time, straight from the tagger."""
    model = SequenceTagger.load_from_checkpoint(checkpoint).eval()
    found = []
    with torch.inference_mode():
        for i, tokens in enumerate(sentences):
            batch = collate([encode_sentence(model.vocabularies, i, tokens)])
            probability = model.tagger.best_path_probability(model(batch), batch["mask"])
            found.append(1.0 - float(probability))
    return found


def _least_sure(uncertainties: list[float], count: int) -> list[int]:
    ranked = sorted(range(len(uncertainties)), key=lambda i: (-uncertainties[i], i))
    gap = uncertainties[ranked[count - 1]] - uncertainties[ranked[count]]
    assert gap > 1e-5, "the choice is too close to call for this test"
    return sorted(ranked[:count])


def _write_input(corpus: dict[str, Path], folder: Path, fmt: str) -> Path:
    sentences = read_corpus(corpus["test"], "columns", tag_column=1)
    if fmt == "columns":
        return corpus["test"]
    path = folder / f"input.{fmt}"
    if fmt == "conllu":
        blocks = [
            "".join(
                f"{i}\t{token}\t_\t{tag}\t_\t_\t_\t_\t_\t_\n"
                for i, (token, tag) in enumerate(zip(s.tokens, s.tags, strict=True), 1)
            )
            for s in sentences
        ]
        text = "\n".join(blocks) + "\n"
    elif fmt == "text":
        text = "".join(" ".join(s.tokens) + "\n" for s in sentences)
    else:
        text = "".join(
            json.dumps({"id": f"s{i}", "tokens": list(s.tokens)}) + "\n"
            for i, s in enumerate(sentences)
        )
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["columns", "conllu", "text", "jsonl"])
def test_most_uncertain_writes_the_least_sure_sentences_in_the_input_format(
    fmt, crf, corpus, tmp_path
):
    source = _write_input(corpus, tmp_path, fmt)
    output, chosen = tmp_path / "out.txt", tmp_path / f"annotate.{fmt}"
    _predict(
        crf,
        source,
        f"--prediction.output={output}",
        "--prediction.most_uncertain=5",
        f"--prediction.uncertain_output={chosen}",
        "--data.predict_chunk_size=4",  # the heap carries over six chunks
        fmt=fmt,
    )
    sentences = read_corpus(corpus["test"], "columns")
    uncertainties = _uncertainties(crf, [s.tokens for s in sentences])
    expected = _least_sure(uncertainties, 5)
    options = {"tag_field": "upos"} if fmt == "conllu" else {}
    if fmt == "jsonl":  # its records hold tags, spans and uncertainty: no input to seqtag
        written_tokens = [tuple(r["tokens"]) for r in _records(chosen)]
    else:
        written = read_corpus(chosen, fmt, require_tags=False, **options)
        written_tokens = [s.tokens for s in written]
    assert written_tokens == [sentences[i].tokens for i in expected]
    predicted = _trainer_predict(crf, corpus["test"])
    if fmt in ("columns", "conllu"):
        assert [list(s.tags) for s in written] == [predicted[i]["tags"] for i in expected]
    if fmt == "conllu":
        comments = [line for line in chosen.read_text().splitlines() if line.startswith("#")]
        assert comments == [
            line
            for i in expected
            for line in (f"# index = {i}", f"# uncertainty = {uncertainties[i]:.4f}")
        ]
    elif fmt == "jsonl":
        records = _records(chosen)
        assert [r["id"] for r in records] == [f"s{i}" for i in expected]
        assert [r["tags"] for r in records] == [predicted[i]["tags"] for i in expected]
        assert [r["uncertainty"] for r in records] == pytest.approx(
            [uncertainties[i] for i in expected], abs=2e-4
        )
        assert all("spans" in r for r in records)
    else:
        sidecar = json.loads(Path(f"{chosen}.json").read_text(encoding="utf-8"))
        assert [s["index"] for s in sidecar] == expected
        assert [s["uncertainty"] for s in sidecar] == pytest.approx(
            [uncertainties[i] for i in expected], abs=2e-4
        )
    assert output.exists()
    assert (
        sorted(p.name for p in tmp_path.iterdir() if ".rank" in p.name or p.suffix == ".tmp") == []
    )


def test_a_resumed_run_chooses_as_an_uninterrupted_one(crf, corpus, tmp_path, monkeypatch):
    def run(name: str, *extra: str) -> None:
        _predict(
            crf,
            corpus["test"],
            f"--prediction.output={tmp_path / name}",
            "--prediction.most_uncertain=4",
            f"--prediction.uncertain_output={tmp_path / (name + '.annotate')}",
            "--data.predict_chunk_size=4",
            *extra,
        )

    run("reference")
    original, calls = OutputSink.write_chunk, []

    def failing(self, text: str, chunk_size: int) -> None:
        calls.append(chunk_size)
        if len(calls) == 3:  # after the heap of chunk 3 is saved, before the chunk is
            raise RuntimeError("killed")
        original(self, text, chunk_size)

    monkeypatch.setattr(OutputSink, "write_chunk", failing)
    with pytest.raises(RuntimeError, match="killed"):
        run("out")
    assert (tmp_path / "out.annotate.rank0-of-1.uncertain.json").exists()
    monkeypatch.setattr(OutputSink, "write_chunk", original)
    run("out", "--prediction.resume=true")
    for name in ("", ".annotate", ".annotate.json"):
        assert (tmp_path / f"out{name}").read_bytes() == (
            tmp_path / f"reference{name}"
        ).read_bytes()
    assert not list(tmp_path.glob("*.uncertain.json"))


def test_the_heap_keeps_the_most_uncertain_and_the_earlier_of_equals():
    heap = MostUncertain(3)
    for index, uncertainty in enumerate([0.5, 0.9, 0.5, 0.1, 0.5, 0.9, 0.2]):
        heap.add({"index": index, "uncertainty": uncertainty})
    heap.add({"index": 1, "uncertainty": 0.9})  # the same sentence again counts once
    assert [r["index"] for r in heap.records()] == [0, 1, 5]


def test_rank_zero_merges_every_process_choice(tmp_path):
    path = tmp_path / "annotate.txt"
    values = [0.3, 0.8, 0.1, 0.7, 0.7, 0.05, 0.9, 0.2]
    shares = [UncertainOutput(path, 3, "text", "upos", rank, 2) for rank in (0, 1)]
    for index, uncertainty in enumerate(values):
        record = {"index": index, "uncertainty": uncertainty, "tokens": [f"w{index}"]}
        shares[(index // 2) % 2].heap.add({**record, "tags": ["O"], "extra": None})
    shares[1].save(2)
    shares[0].write()
    assert path.read_text() == "w1\nw3\nw6\n"
    assert [s["index"] for s in json.loads(Path(f"{path}.json").read_text())] == [1, 3, 6]


@pytest.mark.slow
def test_ddp_chooses_as_one_process(crf, corpus, tmp_path):
    """Two gloo processes, each with its own heap: rank 0's merge equals one process's choice."""
    chosen = {}
    for name, overlay in (
        ("one", []),
        ("ddp", ["--config", str(REPO / "configs/trainer/ddp_cpu.yaml")]),
    ):
        chosen[name] = tmp_path / f"{name}.annotate"
        command = [
            sys.executable,
            "-m",
            "seqtag",
            "predict",
            f"--ckpt_path={crf}",
            *overlay,
            f"--data.predict_path={corpus['test']}",
            "--data.predict_format=columns",
            "--data.predict_chunk_size=3",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--prediction.output={tmp_path / name}",
            "--prediction.most_uncertain=6",
            f"--prediction.uncertain_output={chosen[name]}",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert chosen["ddp"].read_bytes() == chosen["one"].read_bytes()
    assert not list(tmp_path.glob("*.uncertain.json"))
