"""Outputs the system cannot take: devices, pipes, names too long, a full disk.

Each is one line and exit status 1, before any tagging where it can be known before; and a
device is never replaced by a regular file (outputs are written beside their target and
renamed into place, which over ``/dev/null`` would replace the device).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import lightning.pytorch as pl
import pytest
from conftest import REPO, assert_one_line_error, run_seqtag, train_checkpoint

from seqtag import PredictionWriter, SequenceTagger, TaggingDataModule
from seqtag.errors import ConfigError, OutputError
from seqtag.files.outputs import check_output_file, check_output_folder

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = str(REPO / "tests" / "fixtures" / "tiny.conllu")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    data = TaggingDataModule(train_path=TINY, batch_size=2)
    return train_checkpoint(folder, data, SequenceTagger(hidden_size=8))


def test_a_named_pipe_is_refused_and_left_alone(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(OutputError, match="not a regular file"):
        check_output_file(pipe)
    assert stat.S_ISFIFO(pipe.stat().st_mode)


@pytest.mark.parametrize("room", [0, 300])
def test_names_longer_than_the_file_system_allows_are_refused(tmp_path, room):
    name = "x" * (256 - 16 + room)  # too long once seqtag adds its suffix, or at all
    with pytest.raises(OutputError, match="bytes long"):
        check_output_file(tmp_path / name)
    with pytest.raises(OutputError, match="bytes long"):
        check_output_folder(tmp_path / ("y" * 300) / "checkpoints")


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_predict_and_export_refuse_a_device_before_tagging(model_path, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("a b\n", encoding="utf-8")
    before = os.stat("/dev/null")
    predict = run_seqtag(
        "predict",
        f"--ckpt_path={model_path}",
        f"--data.predict_path={text}",
        "--data.predict_format=text",
        "--prediction.output=/dev/null",
        cwd=tmp_path,
    )
    assert_one_line_error(predict, "/dev/null: is not a regular file")
    export = run_seqtag(
        "export",
        f"--ckpt_path={model_path}",
        "--format=torchscript",
        "--output=/dev/null",
        cwd=tmp_path,
    )
    assert_one_line_error(export, "/dev/null: is not a regular file")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_full_disk_while_writing_is_one_line(model_path, tmp_path):
    """Standard output redirected to a full device: the write fails half-way."""
    text = tmp_path / "in.txt"
    text.write_text("a b\n" * 50, encoding="utf-8")
    with open("/dev/full", "w") as full:
        result = run_seqtag(
            "predict",
            f"--ckpt_path={model_path}",
            f"--data.predict_path={text}",
            "--data.predict_format=text",
            cwd=tmp_path,
            stdout=full,
        )
    assert_one_line_error(result, "No space left on device")


def test_a_symbolic_link_is_refused_and_left_a_link(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("kept\n", encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        check_output_file(link)
    assert link.is_symlink() and target.read_text(encoding="utf-8") == "kept\n"


def test_predictions_never_replace_their_input(model_path, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("a b\nc\n", encoding="utf-8")
    result = run_seqtag(
        "predict",
        f"--ckpt_path={model_path}",
        f"--data.predict_path={text}",
        "--data.predict_format=text",
        f"--prediction.output={tmp_path / '.' / 'in.txt'}",
        cwd=tmp_path,
    )
    assert_one_line_error(result, "is the input")
    assert text.read_text(encoding="utf-8") == "a b\nc\n"


# -- the prediction writer never writes over what it reads, nor over its own outputs ----------
@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("output_is_checkpoint", "prediction.output {ckpt} is the checkpoint it predicts with"),
        ("output_is_hard_link", "prediction.output {out} is the checkpoint it predicts"),
        ("output_through_linked_folder", "prediction.output {out} is the checkpoint"),
        ("uncertain_is_checkpoint", "prediction.uncertain_output {ckpt} is the checkpoint"),
        ("sidecar_is_input", "the sidecar of prediction.uncertain_output {input} is the input"),
        ("sidecar_is_output", "the sidecar of prediction.uncertain_output {out} is prediction."),
    ],
)
def test_the_prediction_writer_never_writes_over_its_inputs(model_path, tmp_path, case, words):
    """Through ``Trainer.predict`` (the CLI refuses these earlier, from its options): the
    checkpoint is known to the writer once Lightning has loaded it."""
    ckpt = tmp_path / "model.ckpt"
    shutil.copyfile(model_path, ckpt)
    source = tmp_path / ("words.json" if case == "sidecar_is_input" else "in.txt")
    source.write_text("a b\nc\n", encoding="utf-8")
    options: dict = {"output": str(tmp_path / "out.conll")}
    if case == "output_is_checkpoint":
        options["output"] = str(ckpt)
    elif case == "output_is_hard_link":
        os.link(ckpt, tmp_path / "link.ckpt")
        options["output"] = str(tmp_path / "link.ckpt")
    elif case == "output_through_linked_folder":
        (tmp_path / "folder").symlink_to(tmp_path)
        options["output"] = str(tmp_path / "folder" / "model.ckpt")
    elif case == "uncertain_is_checkpoint":
        options.update(most_uncertain=1, uncertain_output=str(ckpt))
    elif case == "sidecar_is_input":
        options.update(most_uncertain=1, uncertain_output=str(tmp_path / "words"))
    else:
        options.update(output=str(tmp_path / "F.json"), most_uncertain=1)
        options["uncertain_output"] = str(tmp_path / "F")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    trainer = pl.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[PredictionWriter(**options)],
    )
    data = TaggingDataModule(predict_path=str(source), predict_format="text")
    model = SequenceTagger.load_from_checkpoint(ckpt)
    expected = words.format(ckpt=ckpt, input=source, out=options["output"])
    with pytest.raises(ConfigError, match="^" + re.escape(expected)):
        trainer.predict(model, datamodule=data, ckpt_path=str(ckpt), return_predictions=False)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # nothing written, nothing replaced
