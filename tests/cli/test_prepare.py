"""``seqtag prepare`` and ``seqtag fit`` from its folder: the command, its refusals, and a
training run killed and resumed from ``last.ckpt`` that sees the same batches and ends with the
same weights as one never interrupted."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_one_line_error, run_seqtag
from resume_helpers import resumable_fit

pytest.importorskip("litdata")

CONFIG = REPO / "configs" / "ud_ewt_upos.yaml"
STEPS_PER_EPOCH = 38  # 300 sentences in batches of 8
KILL_STEP = 47  # epoch 1, two steps after the step-45 checkpoint


def _data_options(ewt_slice: dict[str, Path], train: Path | str) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        f"--data.train_path={train}",
        f"--data.val_path={ewt_slice['dev']}",
        "--data.test_path=null",
        "--data.batch_size=8",
    ]


@pytest.fixture(scope="module")
def prepared(ewt_slice, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("prepared") / "ewt"
    result = run_seqtag(
        "prepare", *_data_options(ewt_slice, ewt_slice["train"]), f"--output={folder}", cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"prepared 300 sentences (7,027 tokens) of {ewt_slice['train']}" in result.stdout
    return folder


def test_prepare_writes_chunks_and_a_plain_json_manifest(prepared):
    names = sorted(p.name for p in prepared.iterdir())
    assert "index.json" in names and "seqtag-prepared.json" in names
    assert any(name.startswith("chunk-") and name.endswith(".bin") for name in names)
    manifest = json.loads((prepared / "seqtag-prepared.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == 1
    assert (manifest["sentences"], manifest["tokens"]) == (300, 7027)
    assert len(manifest["vocabularies"]["tags"]["items"]) == 17
    assert manifest["options"]["format"] == "conllu" and manifest["options"]["vectors"]


def test_help_documents_the_options(tmp_path):
    result = run_seqtag("prepare", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--output", "--chunk_bytes", "--workers", "--config", "--print_config"):
        assert option in result.stdout
    assert "--data.train_path" in result.stdout and "seqtag[stream]" in result.stdout


def test_an_output_holding_files_is_refused_and_left_alone(ewt_slice, prepared, tmp_path):
    before = {p.name: p.read_bytes() for p in prepared.iterdir()}
    options = _data_options(ewt_slice, ewt_slice["train"])
    result = run_seqtag("prepare", *options, f"--output={prepared}", cwd=REPO)
    assert_one_line_error(result, "already holds a prepared corpus")
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == before

    (tmp_path / "notes.txt").write_text("mine\n", encoding="utf-8")
    result = run_seqtag("prepare", *options, f"--output={tmp_path}", cwd=REPO)
    assert_one_line_error(result, "already holds files")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]

    result = run_seqtag("prepare", *options, f"--output={ewt_slice['train']}", cwd=REPO)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert ewt_slice["train"].is_file()


def test_output_is_required(tmp_path):
    result = run_seqtag("prepare", "--data.train_path=x.conllu", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "required: prepare.output" in result.stderr


def test_training_from_a_folder_without_manifest_is_one_line(ewt_slice, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    run = tmp_path / "run"
    result = run_seqtag(
        "fit",
        *_data_options(ewt_slice, folder),
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={run}",
        f"--trainer.logger.init_args.save_dir={run}",
        f"--checkpoint.dirpath={run / 'checkpoints'}",
        cwd=REPO,
    )
    assert_one_line_error(result, f"{folder}: no seqtag-prepared.json")


# -- kill and resume ------------------------------------------------------------------------
def _fit(ewt_slice, prepared: Path, run: Path, *extra: str):
    record = (
        "--trainer.callbacks+=resume_helpers.RecordBatches",
        f"--trainer.callbacks.path={run / 'batches.txt'}",
    )
    return resumable_fit(prepared, ewt_slice["dev"], run, *record, *extra, timeout=300)


def _batches(run: Path) -> dict[int, str]:
    """Sentence positions of each step's batch; a step trained again after a resume wins."""
    lines = (run / "batches.txt").read_text(encoding="utf-8").splitlines()
    return dict(line.split(" ", 1) for line in lines)


@pytest.mark.slow
def test_a_killed_run_resumes_at_the_same_batch(ewt_slice, prepared, tmp_path):
    whole = tmp_path / "whole"
    result = _fit(ewt_slice, prepared, whole)
    assert result.returncode == 0, result.stderr[-3000:]

    run = tmp_path / "killed"
    killed = _fit(
        ewt_slice,
        prepared,
        run,
        "--trainer.callbacks+=resume_helpers.KillAtStep",
        f"--trainer.callbacks.step={KILL_STEP}",
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 45
    resumed = _fit(ewt_slice, prepared, run, f"--ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # seqtag fit learnt from the folder: the dev accuracy after two epochs is far above chance.
    with open(next((whole / "logs").glob("version_*/metrics.csv")), newline="") as stream:
        scores = [float(row["val_acc"]) for row in csv.DictReader(stream) if row.get("val_acc")]
    assert len(scores) == 2 and scores[-1] > 0.5  # chance is 1/17

    expected = _batches(whole)
    assert len(expected) == 2 * STEPS_PER_EPOCH
    assert _batches(run) == expected  # the same sentences in the same batches, step by step
    first, second = (torch.load(r / "final.pt", weights_only=True) for r in (whole, run))
    assert first["step"] == second["step"] == 2 * STEPS_PER_EPOCH
    for name, tensor in first["weights"].items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(tensor, second["weights"][name]), name


@pytest.mark.slow
def test_two_processes_each_train_on_their_own_share(ewt_slice, prepared, tmp_path):
    """DDP from a prepared folder: every process reads its own share of the epoch, no sentence
    twice; LitData leaves out fewer than processes x batch_size sentences so that both
    processes take the same number of batches (docs/scaling.md says so)."""
    run = tmp_path / "ddp"
    result = _fit(
        ewt_slice,
        prepared,
        run,
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shares = []
    for rank in (0, 1):
        lines = (run / f"batches.txt.{rank}").read_text(encoding="utf-8").splitlines()
        shares.append([int(i) for line in lines for i in json.loads(line.split(" ", 1)[1])])
    assert shares[0] and shares[1]
    assert not set(shares[0]) & set(shares[1])  # no sentence read by both processes
    assert len(shares[0]) == len(shares[1])  # the same number of full batches
    read = sorted(shares[0] + shares[1])
    assert len(set(read)) == len(read) and set(read) <= set(range(300))
    assert 300 - 2 * 8 < len(read) <= 300  # fewer than processes x batch_size left out
