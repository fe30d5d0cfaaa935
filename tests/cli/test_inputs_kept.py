"""No command writes over a file it was given, another run's checkpoints, or the working folder.

Each case is a command line that today's users could type by mistake; each must be refused in
one line before any work, and leave every file as it was (compared byte for byte).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_one_line_error, run_seqtag, train_checkpoint

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = REPO / "tests" / "fixtures" / "tiny.conllu"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    data = TaggingDataModule(train_path=str(TINY), val_path=str(TINY), batch_size=2)
    return train_checkpoint(folder, data, SequenceTagger(hidden_size=8))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def run_folder(tmp_path, model_path) -> dict[str, Path]:
    """A copy of the model, an input text and a config file in a fresh folder."""
    model = tmp_path / "model.ckpt"
    model.write_bytes(model_path.read_bytes())
    text = tmp_path / "in.txt"
    text.write_text("The cat sat .\n", encoding="utf-8")
    config = tmp_path / "run.yaml"
    config.write_text("seed_everything: 1\n", encoding="utf-8")
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("cat 0.5 0.25\n", encoding="utf-8")
    return {"folder": tmp_path, "model": model, "text": text, "config": config, "vectors": vectors}


def predict_args(files: dict[str, Path], *extra: str) -> list[str]:
    return [
        "predict",
        f"--config={files['config']}",
        f"--ckpt_path={files['model']}",
        f"--data.predict_path={files['text']}",
        "--data.predict_format=text",
        *extra,
    ]


CASES = {
    "output is the checkpoint": (lambda f: [f"--prediction.output={f['model']}"], "checkpoint"),
    "output is the config file": (lambda f: [f"--prediction.output={f['config']}"], "config"),
    "output is the input": (lambda f: [f"--prediction.output={f['text']}"], "input"),
    "output is the vectors file": (
        lambda f: [f"--data.vectors={f['vectors']}", f"--prediction.output={f['vectors']}"],
        "--data.vectors",
    ),
    "uncertain output is the checkpoint": (
        lambda f: ["--prediction.most_uncertain=1", f"--prediction.uncertain_output={f['model']}"],
        "checkpoint",
    ),
    "uncertain output's sidecar is the input": (
        lambda f: [
            "--prediction.most_uncertain=1",
            f"--prediction.uncertain_output={str(f['text'])[: -len('.json')]}"
            if str(f["text"]).endswith(".json")
            else f"--prediction.uncertain_output={f['folder'] / 'u'}",
        ],
        "sidecar",
    ),
    "uncertain output is the main output": (
        lambda f: [
            f"--prediction.output={f['folder'] / 'out.txt'}",
            "--prediction.most_uncertain=1",
            f"--prediction.uncertain_output={f['folder'] / 'out.txt'}",
        ],
        "output of --prediction.output",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_predict_never_writes_over_what_it_was_given(run_folder, case):
    make, message = CASES[case]
    files = run_folder
    if "sidecar" in case:  # the input is named like the sidecar of the uncertain output
        sidecar_input = files["folder"] / "u.json"
        sidecar_input.write_text("The cat\n", encoding="utf-8")
        files = {**files, "text": sidecar_input}
    before = {name: digest(path) for name, path in files.items() if path.is_file()}
    result = run_seqtag(*predict_args(files, *make(files)), cwd=files["folder"])
    assert_one_line_error(result, message)
    assert "destroy" in result.stderr
    assert {name: digest(path) for name, path in files.items() if path.is_file()} == before


def test_a_symbolic_link_to_the_checkpoint_counts_as_the_checkpoint(run_folder):
    files = run_folder
    link = files["folder"] / "link.txt"
    link.symlink_to(files["model"])
    before = digest(files["model"])
    result = run_seqtag(*predict_args(files, f"--prediction.output={link}"), cwd=files["folder"])
    assert_one_line_error(result, "checkpoint")
    assert digest(files["model"]) == before


def test_fit_refuses_a_folder_of_another_run_when_resuming_from_elsewhere(tmp_path, model_path):
    """--ckpt_path A --checkpoint.dirpath B used to overwrite B's best.ckpt at the end."""
    other_run = tmp_path / "other"
    other_run.mkdir()
    for name in ("best.ckpt", "last.ckpt"):
        (other_run / name).write_bytes(model_path.read_bytes())
    before = {p.name: digest(p) for p in other_run.iterdir()}
    result = run_seqtag(
        "fit",
        f"--ckpt_path={model_path}",
        f"--data.train_path={TINY}",
        "--trainer.max_epochs=3",
        f"--checkpoint.dirpath={other_run}",
        "--trainer.logger=false",
        cwd=tmp_path,
    )
    assert_one_line_error(result, "another run")
    assert f"--ckpt_path {other_run / 'last.ckpt'}" in result.stderr
    assert {p.name: digest(p) for p in other_run.iterdir()} == before


def test_fit_resumes_a_folder_from_its_own_last_checkpoint(tmp_path, model_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.ckpt").write_bytes(model_path.read_bytes())
    result = run_seqtag(
        "fit",
        f"--ckpt_path={run / 'last.ckpt'}",
        f"--data.train_path={TINY}",
        "--trainer.max_epochs=2",
        f"--checkpoint.dirpath={run}",
        "--trainer.logger=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    started = torch.load(model_path, weights_only=True)["global_step"]
    assert torch.load(run / "last.ckpt", weights_only=True)["global_step"] > started


def test_test_and_predict_leave_no_log_folder_in_the_working_folder(run_folder):
    files = run_folder
    folder = files["folder"]
    test = run_seqtag(
        "test", f"--ckpt_path={files['model']}", f"--data.test_path={TINY}", cwd=folder
    )
    assert test.returncode == 0, test.stderr[-2000:]
    assert "test_acc" in test.stdout
    predict = run_seqtag(*predict_args(files)[:1], *predict_args(files)[2:], cwd=folder)
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert not (folder / "lightning_logs").exists()


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_a_checkpoint_temperature_out_of_range_is_refused(model_path, tmp_path, value):
    checkpoint = torch.load(model_path, weights_only=True)
    checkpoint["state_dict"]["tagger.temperature"] = torch.tensor(value)
    edited = tmp_path / "edited.ckpt"
    torch.save(checkpoint, edited)
    message = "NaN" if value != value else "temperature"
    with pytest.raises(CheckpointError, match=message) as caught:
        SequenceTagger.load_from_checkpoint(edited)
    assert str(edited) in str(caught.value)
    result = run_seqtag("test", f"--ckpt_path={edited}", f"--data.test_path={TINY}", cwd=tmp_path)
    assert_one_line_error(result, str(edited))


def test_fit_without_a_logger_leaves_a_config_yaml_in_the_working_folder_alone(tmp_path):
    """Lightning's config saver writes to the log folder: without a logger that is the working
    folder, whose config.yaml may be the very file this run was started with."""
    config = tmp_path / "config.yaml"
    config.write_text(f"data:\n  train_path: {TINY}\n", encoding="utf-8")
    before = digest(config)
    result = run_seqtag(
        "fit",
        f"--config={config}",
        "--trainer.max_epochs=1",
        "--model.hidden_size=8",
        "--trainer.logger=false",
        f"--checkpoint.dirpath={tmp_path / 'ck'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert digest(config) == before
    assert (tmp_path / "ck" / "last.ckpt").exists()


def test_resuming_with_a_monitor_the_model_does_not_log_is_one_line(tmp_path, model_path):
    """A POS model logs no span F1; the run's checks cannot know the task before the checkpoint
    is restored, so Lightning's complaint at the first validation is the one line."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.ckpt").write_bytes(model_path.read_bytes())
    result = run_seqtag(
        "fit",
        f"--ckpt_path={run / 'last.ckpt'}",
        f"--data.train_path={TINY}",
        f"--data.val_path={TINY}",
        "--checkpoint.monitor=val_f1",
        "--trainer.max_epochs=2",
        f"--checkpoint.dirpath={run}",
        "--trainer.logger=false",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("seqtag: error:")]
    assert len(errors) == 1 and "val_f1" in errors[0], result.stderr[-2000:]
