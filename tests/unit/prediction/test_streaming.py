"""Tagging at corpus scale: lazy chunks, ordered incremental output, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_seqtag, train_checkpoint

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.cli.main import main
from seqtag.data.io.formats import read_corpus


@pytest.fixture(scope="module")
def checkpoint(ewt_slice, tmp_path_factory) -> Path:
    """A small EWT tagger with character features, trained for one epoch."""
    data = TaggingDataModule(train_path=str(ewt_slice["train"]), batch_size=16)
    model = SequenceTagger(hidden_size=32, char_features="cnn")
    return train_checkpoint(tmp_path_factory.mktemp("streaming"), data, model, seed=3)


@pytest.fixture(scope="module")
def text(ewt_slice, tmp_path_factory) -> Path:
    """The EWT test slice as plain text, one sentence per line (101 sentences)."""
    path = tmp_path_factory.mktemp("text") / "input.txt"
    sentences = read_corpus(ewt_slice["test"], "conllu")
    path.write_text("\n".join(" ".join(s.tokens) for s in sentences) + "\n", encoding="utf-8")
    return path


def _predict(checkpoint: Path, source: Path | str, output: Path | None, *extra: str) -> None:
    main(
        [
            "predict",
            f"--ckpt_path={checkpoint}",
            f"--data.predict_path={source}",
            "--data.predict_format=text",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            *([f"--prediction.output={output}"] if output else []),
            *extra,
        ]
    )


def test_tag_stream_equals_tag_and_reads_one_chunk_at_a_time(checkpoint, text):
    model = SequenceTagger.load_from_checkpoint(checkpoint)
    sentences = [line.split() for line in text.read_text(encoding="utf-8").splitlines()]
    pulled = []

    def source():
        for sentence in sentences:
            pulled.append(sentence)
            yield sentence

    stream = model.tag_stream(source(), batch_size=8, chunk_size=10)
    first = next(stream)
    assert len(pulled) == 10  # one chunk read, not the whole input
    assert [first, *stream] == model.tag(sentences)


def test_chunk_size_does_not_change_the_output(checkpoint, text, tmp_path):
    outputs = []
    for chunk_size in (4096, 7, 1):
        output = tmp_path / f"out{chunk_size}.conll"
        _predict(
            checkpoint,
            text,
            output,
            f"--data.predict_chunk_size={chunk_size}",
            "--prediction.confidences=true",
        )
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0].count(b"\n\n") == 101
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.progress.json"))


def test_json_lines_pass_their_fields_through(checkpoint, tmp_path):
    source = tmp_path / "in.jsonl"
    records = [
        {"id": "a", "tokens": ["The", "cat", "sat", "."]},
        {"id": "b", "tokens": [], "source": {"page": 3}},
        {"tokens": ["Hello", "!"], "id": "c"},
    ]
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    _predict(
        checkpoint, source, output, "--data.predict_format=jsonl", "--data.predict_chunk_size=2"
    )
    written = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [w["id"] for w in written] == ["a", "b", "c"]
    assert written[1] == {"id": "b", "tokens": [], "tags": [], "source": {"page": 3}}
    model = SequenceTagger.load_from_checkpoint(checkpoint)
    expected = model.tag([r["tokens"] for r in records])
    assert [w["tags"] for w in written] == [[tag for tag, _ in s] for s in expected]


def test_standard_input_to_standard_output(checkpoint, text):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqtag",
            "predict",
            f"--ckpt_path={checkpoint}",
            "--data.predict_path=-",
            "--data.predict_format=text",
            "--trainer.logger=false",
        ],
        input=text.read_text(encoding="utf-8"),
        capture_output=True,
        text=True,
        check=True,
    )
    blocks = result.stdout.rstrip("\n").split("\n\n")
    assert [[row.split("\t")[0] for row in block.split("\n")] for block in blocks] == [
        line.split() for line in text.read_text(encoding="utf-8").splitlines()
    ]


def test_a_dash_as_output_is_standard_output(checkpoint, text, tmp_path):
    """``--prediction.output -`` is standard output, as ``-`` is standard input for the input."""
    result = run_seqtag(
        "predict",
        f"--ckpt_path={checkpoint}",
        f"--data.predict_path={text}",
        "--data.predict_format=text",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--prediction.output=-",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n\n") == 101
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no file named "-", no parts


def test_leftovers_of_an_interrupted_run_are_never_overwritten(checkpoint, text, tmp_path, capsys):
    output = tmp_path / "out.conll"
    leftover = tmp_path / "out.conll.rank0-of-1.partial"
    leftover.write_text("half a run\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        _predict(checkpoint, text, output)
    assert exit_info.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "left from an interrupted run" in message and "--prediction.resume true" in message
    assert leftover.read_text(encoding="utf-8") == "half a run\n" and not output.exists()


def test_an_unwritable_output_fails_before_tagging(checkpoint, text, tmp_path, capsys, monkeypatch):
    tagged = []
    predict_step = SequenceTagger.predict_step

    def counting(self, *args, **kwargs):
        tagged.append(1)
        return predict_step(self, *args, **kwargs)

    monkeypatch.setattr(SequenceTagger, "predict_step", counting)
    for output, expected in (
        (tmp_path / "missing" / "out.conll", "does not exist"),
        (tmp_path, "is a directory"),
    ):
        with pytest.raises(SystemExit):
            _predict(checkpoint, text, output)
        assert expected in capsys.readouterr().err
        assert tagged == []  # refused before the first batch was tagged


@pytest.mark.slow
def test_killed_prediction_resumes_to_the_same_bytes(checkpoint, text, tmp_path):
    """SIGKILL after a few chunks, then --prediction.resume true: the uninterrupted bytes."""
    big = tmp_path / "big.txt"
    big.write_text(text.read_text(encoding="utf-8") * 60, encoding="utf-8")  # 6,060 sentences
    command = [
        sys.executable,
        "-m",
        "seqtag",
        "predict",
        f"--ckpt_path={checkpoint}",
        f"--data.predict_path={big}",
        "--data.predict_format=text",
        "--data.predict_chunk_size=101",
        "--prediction.confidences=true",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference.conll"
    subprocess.run([*command, f"--prediction.output={reference}"], check=True, env=environment)
    output = tmp_path / "out.conll"
    progress = tmp_path / "out.conll.rank0-of-1.progress.json"
    process = subprocess.Popen(
        [*command, f"--prediction.output={output}"], env=environment, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if progress.exists() and len(json.loads(progress.read_text())["lengths"]) >= 3:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not output.exists(), "the run finished before it could be killed"
    done = len(json.loads(progress.read_text())["lengths"])
    assert 3 <= done < 60
    subprocess.run(
        [*command, f"--prediction.output={output}", "--prediction.resume=true"],
        check=True,
        env=environment,
    )
    assert output.read_bytes() == reference.read_bytes()
    assert not progress.exists()


def test_prediction_leaves_a_config_yaml_in_the_working_folder_alone(
    checkpoint, text, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "config.yaml"
    mine.write_text("my: own config\n", encoding="utf-8")
    _predict(checkpoint, text, tmp_path / "out.conll")  # no logger: log folder = working folder
    assert mine.read_text(encoding="utf-8") == "my: own config\n"


def test_json_lines_output_on_request_for_text_input(checkpoint, text, tmp_path):
    output = tmp_path / "out.jsonl"
    _predict(checkpoint, text, output, "--prediction.format=jsonl", "--prediction.confidences=true")
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    lines = text.read_text(encoding="utf-8").splitlines()
    assert [r["tokens"] for r in records] == [line.split() for line in lines]
    assert all(len(r["tags"]) == len(r["confidences"]) == len(r["tokens"]) for r in records)
    assert all(0.0 <= c <= 1.0 for r in records for c in r["confidences"])
