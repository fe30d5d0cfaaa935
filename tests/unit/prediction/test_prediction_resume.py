"""A resumed ``seqtag predict`` is exact or refuses (issue 22, section 3 and section 5).

Each refusal starts from the parts a really interrupted run left (a chunk write that fails
after three chunks), changes one thing a user (or a crash, or a tool) could change, and
resumes: the run must end with one line naming the file at fault and say what differs, and
write no output.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import REPO, train_checkpoint
from torch.utils.data import DataLoader

from seqtag import PredictionWriter, SequenceTagger, TaggingDataModule
from seqtag.cli.main import main
from seqtag.data.batching import collate, encode_sentence
from seqtag.errors import ConfigError, OutputError
from seqtag.prediction.output import OutputSink
from seqtag.prediction.uncertain import UncertainOutput

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = str(REPO / "tests" / "fixtures" / "tiny.conllu")
SENTENCES = [
    "I do n't know .",
    "Sue likes coffee and Bill likes tea",
    "Bill likes coffee .",
    "I know Sue .",
    "tea and coffee",
    "Sue do n't know Bill .",
    "I likes tea .",
    "know .",
    "Bill and Sue likes coffee and tea",
    "I do know .",
    "coffee .",
    "Sue .",
]
CHUNK = 2  # 6 chunks
KILLED_AFTER = 3


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    data = TaggingDataModule(train_path=TINY, batch_size=2)
    return train_checkpoint(tmp_path_factory.mktemp("model"), data, SequenceTagger(hidden_size=8))


@pytest.fixture
def text(tmp_path) -> Path:
    path = tmp_path / "input.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def _predict(model: Path, source: Path, output: Path | str, *extra: str) -> None:
    main(
        [
            "predict",
            f"--ckpt_path={model}",
            f"--data.predict_path={source}",
            "--data.predict_format=text",
            f"--data.predict_chunk_size={CHUNK}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            f"--prediction.output={output}",
            *extra,
        ]
    )


def _interrupted(model: Path, source: Path, output: Path, monkeypatch, *extra: str) -> None:
    """A run that fails after writing (and recording) three chunks, as a kill would."""
    original, calls = OutputSink.write_chunk, []

    def failing(self, text: str, chunk_size: int) -> None:
        calls.append(chunk_size)
        if len(calls) > KILLED_AFTER:
            raise RuntimeError("killed")
        original(self, text, chunk_size)

    monkeypatch.setattr(OutputSink, "write_chunk", failing)
    with pytest.raises(RuntimeError, match="killed"):
        _predict(model, source, output, *extra)
    monkeypatch.setattr(OutputSink, "write_chunk", original)
    assert not output.exists()


def _refused(capsys, model: Path, source: Path, output: Path, *extra: str) -> str:
    """Resume; the run must fail with status 1 and one line, and write no output."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _predict(model, source, output, "--prediction.resume=true", *extra)
    assert exit_info.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "seqtag: error:" in line]
    assert len(errors) == 1, errors
    assert "Traceback" not in errors[0]
    assert not output.exists()
    return errors[0]


def _progress(output: Path) -> Path:
    return output.with_name(output.name + ".rank0-of-1.progress.json")


def _part(output: Path) -> Path:
    return output.with_name(output.name + ".rank0-of-1.partial")


def _edit_record(output: Path, edit) -> None:
    path = _progress(output)
    record = json.loads(path.read_text(encoding="utf-8"))
    edit(record)
    path.write_text(json.dumps(record), encoding="utf-8")


# -- resuming still gives the uninterrupted bytes --------------------------------------------
@pytest.mark.parametrize("uncertain", [False, True])
def test_a_resumed_run_equals_an_uninterrupted_one(model, text, tmp_path, monkeypatch, uncertain):
    def options(name: str) -> list[str]:
        if not uncertain:
            return ["--prediction.confidences=true"]
        chosen = tmp_path / f"{name}.annotate.txt"
        return [
            "--prediction.confidences=true",
            "--prediction.most_uncertain=3",
            f"--prediction.uncertain_output={chosen}",
        ]

    reference, output = tmp_path / "reference.conll", tmp_path / "out.conll"
    _predict(model, text, reference, *options("reference"))
    _interrupted(model, text, output, monkeypatch, *options("out"))
    record = json.loads(_progress(output).read_text(encoding="utf-8"))
    assert len(record["lengths"]) == len(record["checksums"]) == KILLED_AFTER
    assert record["fingerprint"]["options"]["prediction.confidences"] is True
    _predict(model, text, output, "--prediction.resume=true", *options("out"))
    assert output.read_bytes() == reference.read_bytes()
    if uncertain:
        for suffix in ("annotate.txt", "annotate.txt.json"):
            assert (tmp_path / f"out.{suffix}").read_bytes() == (
                tmp_path / f"reference.{suffix}"
            ).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if ".rank" in p.name) == []


def test_a_kill_between_the_record_and_the_saved_choice_tags_that_chunk_again(
    model, text, tmp_path, monkeypatch
):
    """The record of chunk 3 is written, the most-uncertain state of chunk 3 is not."""
    chosen = {name: tmp_path / f"{name}.annotate.txt" for name in ("reference", "out")}
    reference, output = tmp_path / "reference.conll", tmp_path / "out.conll"
    _predict(
        model,
        text,
        reference,
        "--prediction.most_uncertain=3",
        f"--prediction.uncertain_output={chosen['reference']}",
    )
    original, calls = UncertainOutput.save_text, []

    def failing(self, state: str) -> None:
        calls.append(state)
        if len(calls) == KILLED_AFTER:
            raise RuntimeError("killed")
        original(self, state)

    monkeypatch.setattr(UncertainOutput, "save_text", failing)
    uncertain = ["--prediction.most_uncertain=3", f"--prediction.uncertain_output={chosen['out']}"]
    with pytest.raises(RuntimeError, match="killed"):
        _predict(model, text, output, *uncertain)
    monkeypatch.setattr(UncertainOutput, "save_text", original)
    assert len(json.loads(_progress(output).read_text())["lengths"]) == KILLED_AFTER
    _predict(model, text, output, "--prediction.resume=true", *uncertain)
    assert output.read_bytes() == reference.read_bytes()
    assert chosen["out"].read_bytes() == chosen["reference"].read_bytes()


# -- the progress record and the part --------------------------------------------------------
def _duplicate_first(record: dict) -> None:
    for key in ("lengths", "checksums"):
        record[key][1] = record[key][0]


def _float_length(record: dict) -> None:
    record["lengths"][0] = record["lengths"][0] + 0.5


def _cut_mid_sentence(record: dict) -> None:
    record["lengths"][1] -= 3


def _skip_a_chunk(record: dict) -> None:
    for key in ("lengths", "checksums", "uncertain"):
        del record[key][1]


def _negative(record: dict) -> None:
    record["lengths"][0] = -5


def _old_layout(record: dict) -> None:
    record.clear()
    record.update({"version": 1, "chunk_size": CHUNK, "world_size": 1, "offsets": [10, 20]})


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_duplicate_first, "out.conll.rank0-of-1.partial"),  # too short, or chunk 2 differs
        (_float_length, "is not a whole number of bytes"),
        (_cut_mid_sentence, "does not match the length and checksum"),
        (_skip_a_chunk, "does not match the length and checksum"),
        (_negative, "the chunk length -5 is negative"),
        (_old_layout, "written in progress layout 1"),
    ],
)
def test_an_edited_progress_record_is_refused(
    model, text, tmp_path, monkeypatch, capsys, edit, words
):
    output = tmp_path / "out.conll"
    _interrupted(model, text, output, monkeypatch)
    _edit_record(output, edit)
    line = _refused(capsys, model, text, output)
    assert f"{_progress(output)}:" in line and words in line


def test_an_edited_part_is_refused(model, text, tmp_path, monkeypatch, capsys):
    output = tmp_path / "out.conll"
    _interrupted(model, text, output, monkeypatch)
    part = _part(output)
    data = bytearray(part.read_bytes())
    tag = data.index(b"\t") + 1
    data[tag] = ord("Z") if data[tag] != ord("Z") else ord("Y")  # one tag, same length
    part.write_bytes(bytes(data))
    line = _refused(capsys, model, text, output)
    assert f"{_progress(output)}: chunk 1 of {part} does not match" in line


def test_deeply_nested_json_in_the_progress_record_is_one_line(
    model, text, tmp_path, monkeypatch, capsys
):
    output = tmp_path / "out.conll"
    _interrupted(model, text, output, monkeypatch)
    _progress(output).write_text("[" * 100_000, encoding="utf-8")
    line = _refused(capsys, model, text, output)
    assert f"{_progress(output)}: nested too deeply" in line


# -- what the output depends on --------------------------------------------------------------
def test_a_changed_input_is_refused(model, text, tmp_path, monkeypatch, capsys):
    output = tmp_path / "out.conll"
    _interrupted(model, text, output, monkeypatch)
    text.write_text(text.read_text(encoding="utf-8").replace("Sue", "Bob"), encoding="utf-8")
    line = _refused(capsys, model, text, output)
    assert f"{_progress(output)}: cannot resume: the input file changed" in line


def test_another_checkpoint_is_refused(model, text, tmp_path, monkeypatch, capsys):
    output = tmp_path / "out.conll"
    _interrupted(model, text, output, monkeypatch)
    other = tmp_path / "other.ckpt"
    checkpoint = torch.load(model, weights_only=False)
    name = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][name] = checkpoint["state_dict"][name] + 0.5
    torch.save(checkpoint, other)
    line = _refused(capsys, other, text, output)
    assert f"{_progress(output)}: cannot resume: the model (checkpoint) changed" in line


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("--prediction.confidences=true", "prediction.confidences was false, is now true"),
        ("--prediction.format=jsonl", 'prediction.format was "auto", is now "jsonl"'),
    ],
)
def test_other_output_options_are_refused(
    model, text, tmp_path, monkeypatch, capsys, option, words
):
    output = tmp_path / "out.conll"
    _interrupted(model, text, output, monkeypatch)
    line = _refused(capsys, model, text, output, option)
    assert f"{_progress(output)}: cannot resume: other options" in line and words in line


# -- the saved most-uncertain sentences ------------------------------------------------------
def _state(chosen: Path) -> Path:
    return chosen.with_name(chosen.name + ".rank0-of-1.uncertain.json")


@pytest.mark.parametrize("forge", ["extra", "empty", "nested"])
def test_a_forged_uncertain_state_is_refused(model, text, tmp_path, monkeypatch, capsys, forge):
    output, chosen = tmp_path / "out.conll", tmp_path / "annotate.txt"
    uncertain = ["--prediction.most_uncertain=3", f"--prediction.uncertain_output={chosen}"]
    _interrupted(model, text, output, monkeypatch, *uncertain)
    state = _state(chosen)
    if forge == "nested":
        state.write_text("[" * 100_000, encoding="utf-8")
    else:
        saved = json.loads(state.read_text(encoding="utf-8"))
        forged = {"index": 1, "uncertainty": 1.0, "tokens": ["buy"], "tags": ["X"]}
        saved["sentences"][-1] = {} if forge == "empty" else {**forged, "extra": None}
        state.write_text(json.dumps(saved), encoding="utf-8")
    line = _refused(capsys, model, text, output, *uncertain)
    assert f"{state}: is not the state {_progress(output)} recorded" in line
    assert not chosen.exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("[" * 100_000, "nested too deeply"),
        (json.dumps({"version": 1, "count": 3, "chunks": 1, "sentences": [{}]}), "sentence 1:"),
        (
            json.dumps(
                {
                    "version": 1,
                    "count": 3,
                    "chunks": 1,
                    "sentences": [{"index": 2, "uncertainty": 7, "tokens": [], "tags": []}],
                }
            ),
            "uncertainty 7 is not a number in [0, 1]",
        ),
    ],
)
def test_rank_zero_refuses_a_damaged_state_of_another_process(tmp_path, content, words):
    path = tmp_path / "annotate.txt"
    mine = UncertainOutput(path, 3, "text", "upos", 0, 2)
    mine.heap.add({"index": 0, "uncertainty": 0.5, "tokens": ["a"], "tags": ["X"], "extra": None})
    other = path.with_name(path.name + ".rank1-of-2.uncertain.json")
    other.write_text(content, encoding="utf-8")
    with pytest.raises(OutputError, match="^" + re.escape(str(other))) as info:
        mine.write()
    assert words in str(info.value) and "\n" not in str(info.value)
    assert not path.exists()


def test_the_sidecar_path_is_public():
    from seqtag.prediction.uncertain import uncertain_sidecar_path

    assert uncertain_sidecar_path("to/annotate.txt") == Path("to/annotate.txt.json")


# -- another number of processes, standard output --------------------------------------------
def _parts_of_two_processes(output: Path) -> list[Path]:
    left = []
    for rank in (0, 1):
        for suffix in ("partial", "progress.json"):
            path = output.with_name(f"{output.name}.rank{rank}-of-2.{suffix}")
            path.write_text("{}" if suffix.endswith("json") else "half\n", encoding="utf-8")
            left.append(path)
    return left


def test_parts_of_another_number_of_processes_are_refused_without_resume(
    model, text, tmp_path, capsys
):
    output = tmp_path / "out.conll"
    left = _parts_of_two_processes(output)
    with pytest.raises(SystemExit) as exit_info:
        _predict(model, text, output)
    assert exit_info.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "left from an interrupted run" in message and "2 processes" in message
    assert all(path.exists() for path in left) and not output.exists()


def test_resume_with_another_number_of_processes_starts_over(model, text, tmp_path, caplog):
    reference, output = tmp_path / "reference.conll", tmp_path / "out.conll"
    _predict(model, text, reference)
    left = _parts_of_two_processes(output)
    with caplog.at_level(logging.WARNING, logger="seqtag.prediction.output"):
        _predict(model, text, output, "--prediction.resume=true")
    assert output.read_bytes() == reference.read_bytes()
    assert not any(path.exists() for path in left)
    assert any("starting over" in record.getMessage() for record in caplog.records)


def test_resume_to_standard_output_is_refused(model, text, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _predict(model, text, "-", "--prediction.resume=true")
    assert exit_info.value.code == 1
    assert "standard output has none" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()


def test_a_pipe_as_input_is_read_once(model, text, tmp_path):
    """A named pipe (or ``<(zcat ...)``) cannot be fingerprinted without consuming it: it is
    recorded as a stream, and every sentence is still tagged."""
    reference, output = tmp_path / "reference.conll", tmp_path / "out.conll"
    _predict(model, text, reference)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)

    def feed() -> None:
        pipe.write_bytes(text.read_bytes())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # a second reader gets an empty pipe, not a hang
            try:
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                time.sleep(0.05)

    threading.Thread(target=feed, daemon=True).start()
    _predict(model, pipe, output)
    assert output.read_bytes() == reference.read_bytes()


def test_resume_is_refused_for_a_datamodule_that_cannot_skip_what_was_written(model, tmp_path):
    """Resuming skips the chunks an interrupted run wrote, which only seqtag's DataModule can
    do: another input would be tagged and appended again, so it is refused before tagging."""
    tagger = SequenceTagger.load_from_checkpoint(model)
    sentences = [encode_sentence(tagger.vocabularies, 0, ["the", "cat"], keep_tokens=True)]

    class OwnData(pl.LightningDataModule):
        def predict_dataloader(self) -> DataLoader:
            return DataLoader(sentences, batch_size=1, collate_fn=collate)

    output = tmp_path / "out.conll"
    writer = PredictionWriter(output=str(output), resume=True)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, callbacks=[writer])
    with pytest.raises(ConfigError, match=r"prediction\.resume .* TaggingDataModule, not OwnData"):
        trainer.predict(tagger, datamodule=OwnData(), return_predictions=False)
    assert not output.exists()
