"""Reproducible training and exact resumption after a kill (issue 7).

The slow tests run ``python -m seqtag fit`` in subprocesses on 300 EWT sentences: two runs
with the same seed must agree to the last bit, and a run killed with SIGKILL in the middle of
an epoch and resumed from ``last.ckpt`` must end with the same metrics and weights as a run
that was never interrupted.
"""

from __future__ import annotations

import csv
import random
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from resume_helpers import resumable_fit

from seqtag.checkpoint.plugin import SeqtagCheckpointIO
from seqtag.checkpoint.resume import (
    RNGStateCallback,
    collect_rng_states,
    set_rng_states,
)
from seqtag.data.batching import EncodedDataset, EncodedSentence, collate
from seqtag.data.sampling import LengthBucketSampler, ResumableDataLoader


# -- fast unit tests -------------------------------------------------------------------------
def _dataset(count: int = 50) -> EncodedDataset:
    rng = np.random.default_rng(0)
    return EncodedDataset(
        [
            EncodedSentence(i, np.arange(1, n + 1), np.zeros(n, dtype=np.int64), None)
            for i, n in enumerate(rng.integers(1, 20, size=count))
        ]
    )


def _loader(dataset: EncodedDataset) -> ResumableDataLoader:
    sampler = LengthBucketSampler(
        dataset.lengths, 4, shuffle=True, seed=3, pool_size=2, num_replicas=1, rank=0
    )
    return ResumableDataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=collate)


def test_sampler_resume_at_skips_the_done_batches_once():
    lengths = list(range(1, 41))
    sampler = LengthBucketSampler(lengths, 4, shuffle=True, seed=1, num_replicas=1, rank=0)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.resume_at(2, 3)
    assert list(sampler) == full[3:]
    assert list(sampler) == full  # the skip applies to one pass only
    sampler.resume_at(2, len(sampler))  # a finished epoch resumes at the next one
    assert sampler.epoch == 3
    sampler.set_epoch(3)
    assert len(list(sampler)) == len(sampler)


def test_loader_state_round_trip_continues_mid_epoch():
    dataset = _dataset()
    loader = _loader(dataset)
    loader.sampler.set_epoch(1)
    iterator = iter(loader)
    seen = [next(iterator)["index"].tolist() for _ in range(5)]
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches_done": 5}
    rest = [batch["index"].tolist() for batch in iterator]

    restored = _loader(dataset)  # a fresh process: epoch 0, nothing seen
    restored.load_state_dict(state)
    resumed = [batch["index"].tolist() for batch in restored]
    assert resumed == rest
    assert restored.state_dict() == {"epoch": 1, "batches_done": len(seen) + len(rest)}
    assert len(restored) == len(seen) + len(rest)  # Lightning's batch count stays per epoch


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    callback = RNGStateCallback()
    path = tmp_path / "state.pt"
    torch.save(callback.state_dict(), path)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(7)  # move all generators on
    np.random.rand(7)
    random.random()

    restored = RNGStateCallback()
    restored.load_state_dict(torch.load(path, weights_only=True))
    restored.on_train_start(None, None)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    set_rng_states(collect_rng_states())  # idempotent


def test_the_checkpoint_plugin_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    io = SeqtagCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    mode = path.stat().st_mode & 0o777

    def interrupted_save(obj, stream, *args, **kwargs):
        stream.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # stands in for a kill in the middle of writing

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left
    io.save_checkpoint({"step": torch.tensor(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 3
    assert path.stat().st_mode & 0o777 == mode
    assert isinstance(io, TorchCheckpointIO)  # loading stays Lightning's


# -- end to end (subprocesses) ------------------------------------------------------------
STEPS_PER_EPOCH = 38  # 300 sentences in batches of 8
KILL_STEP = 47  # epoch 1, two steps after the step-45 checkpoint


def _fit(ewt_slice, run: Path, *extra: str) -> subprocess.CompletedProcess:
    return resumable_fit(ewt_slice["train"], ewt_slice["dev"], run, *extra, timeout=120)


def _val_acc(run: Path) -> list[tuple[int, str]]:
    """(epoch, val_acc as written) for every validation, over all logger versions in order."""
    rows = []
    versions = sorted((run / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    for version in versions:
        with open(version / "metrics.csv", newline="") as stream:
            rows += [
                (int(row["epoch"]), row["val_acc"])
                for row in csv.DictReader(stream)
                if row.get("val_acc")
            ]
    return rows


def _final(run: Path) -> dict:
    return torch.load(run / "final.pt", weights_only=True)


def _assert_same_weights(first: dict, second: dict, steps: int = 2 * STEPS_PER_EPOCH) -> None:
    assert first["step"] == second["step"] == steps
    assert first["weights"].keys() == second["weights"].keys()
    for name, tensor in first["weights"].items():
        if not isinstance(tensor, torch.Tensor):  # the state dict's description of its network
            assert tensor == second["weights"][name], name
            continue
        assert torch.equal(tensor, second["weights"][name]), name


@pytest.fixture(scope="module")
def uninterrupted(ewt_slice, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted")
    result = _fit(ewt_slice, run)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.mark.slow
def test_same_seed_gives_identical_runs(ewt_slice, uninterrupted, tmp_path):
    result = _fit(ewt_slice, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_val_acc(uninterrupted)) == 2
    assert _val_acc(tmp_path) == _val_acc(uninterrupted)
    _assert_same_weights(_final(tmp_path), _final(uninterrupted))


@pytest.mark.slow
def test_killed_run_resumes_exactly(ewt_slice, uninterrupted, tmp_path):
    killed = _fit(
        ewt_slice,
        tmp_path,
        "--trainer.callbacks+=resume_helpers.KillAtStep",
        f"--trainer.callbacks.step={KILL_STEP}",
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    # The newest checkpoint is mid-epoch 1, and carries the loader position and RNG state.
    assert checkpoint["global_step"] == 45
    assert checkpoint["epoch"] == 1
    loader_states = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_states == [{"epoch": 1, "batches_done": 45 - STEPS_PER_EPOCH}]
    assert "RNGStateCallback" in checkpoint["callbacks"]

    resumed = _fit(ewt_slice, tmp_path, f"--ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "dataloader is not resumable" not in resumed.stderr
    assert _val_acc(tmp_path) == _val_acc(uninterrupted)
    _assert_same_weights(_final(tmp_path), _final(uninterrupted))


@pytest.mark.slow
def test_killed_run_on_the_corpus_cache_resumes_exactly_as_the_in_memory_run(
    ewt_slice, uninterrupted, tmp_path, monkeypatch
):
    """data.corpus_cache: killed mid-epoch, resumed from the cache that the first attempt
    built, the run ends with the weights of the uninterrupted run that read into memory."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SEQTAG_CACHE_DIR", str(cache))
    run = tmp_path / "run"
    kill = (
        "--trainer.callbacks+=resume_helpers.KillAtStep",
        f"--trainer.callbacks.step={KILL_STEP}",
    )
    killed = _fit(ewt_slice, run, "--data.corpus_cache=true", *kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert list((cache / "corpora").glob("encoded-*")), "the first attempt built no cache entry"
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 45
    resumed = _fit(ewt_slice, run, "--data.corpus_cache=true", f"--ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _val_acc(run) == _val_acc(uninterrupted)
    _assert_same_weights(_final(run), _final(uninterrupted))


@pytest.mark.slow
def test_killed_while_saving_keeps_the_previous_last_checkpoint(ewt_slice, uninterrupted, tmp_path):
    """Through the command's own checkpoint plugin (no plugin named): a kill while last.ckpt
    is being written leaves the previous one whole, and the run resumes from it."""
    killed = _fit(
        ewt_slice,
        tmp_path,
        "--trainer.callbacks+=resume_helpers.KillWhileSaving",
        "--trainer.callbacks.step=50",
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 45  # the save before
    resumed = _fit(ewt_slice, tmp_path, f"--ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_weights(_final(tmp_path), _final(uninterrupted))


# -- killed between an epoch's last batch and its validation --------------------------------
# Epochs of 12 batches with a step checkpoint every 2: the step-24 checkpoint is written after
# epoch 1's last batch, before that epoch's validation. Lightning resumes such a checkpoint as
# if the validation had run (seqtag.checkpoint.resume.PendingValidation marks it as not yet begun).
SHORT_EPOCHS = (
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=12",
    "--last_checkpoint.every_n_train_steps=2",
)
SHORT_EPOCH_KILL = (
    "--trainer.callbacks+=resume_helpers.KillAtValidation",
    "--trainer.callbacks.step=24",
)


@pytest.fixture(scope="module")
def uninterrupted_short_epochs(ewt_slice, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted-short")
    result = _fit(ewt_slice, run, *SHORT_EPOCHS)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def killed_before_validation(ewt_slice, tmp_path_factory) -> tuple[Path, Path]:
    """The run killed as epoch 1's validation starts, and an untouched copy of its folder."""
    run = tmp_path_factory.mktemp("killed-short")
    killed = _fit(ewt_slice, run, *SHORT_EPOCHS, *SHORT_EPOCH_KILL)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    copy = tmp_path_factory.mktemp("killed-short-copy") / "run"
    shutil.copytree(run, copy)
    return run, copy


@pytest.mark.slow
def test_run_killed_before_an_epochs_validation_resumes_exactly(
    ewt_slice, uninterrupted_short_epochs, killed_before_validation
):
    run, _ = killed_before_validation
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert (checkpoint["global_step"], checkpoint["epoch"]) == (24, 1)  # epoch 1's last batch
    assert [epoch for epoch, _ in _val_acc(run)] == [0]  # killed before epoch 1's validation

    resumed = _fit(ewt_slice, run, *SHORT_EPOCHS, f"--ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _val_acc(run) == _val_acc(uninterrupted_short_epochs)  # epoch 1's included
    assert [epoch for epoch, _ in _val_acc(run)] == [0, 1, 2]
    _assert_same_weights(_final(run), _final(uninterrupted_short_epochs), steps=36)
    for name in ("best.ckpt", "last.ckpt"):
        ours = torch.load(run / "checkpoints" / name, weights_only=True)
        theirs = torch.load(uninterrupted_short_epochs / "checkpoints" / name, weights_only=True)
        assert ours["global_step"] == theirs["global_step"], name
        for key, tensor in theirs["state_dict"].items():
            assert torch.equal(ours["state_dict"][key], tensor), (name, key)


@pytest.mark.slow
def test_resumed_with_that_validation_turned_off_trains_no_extra_batch(
    ewt_slice, killed_before_validation
):
    _, run = killed_before_validation
    resumed = _fit(
        ewt_slice,
        run,
        *SHORT_EPOCHS,
        "--trainer.limit_val_batches=0",
        f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _final(run)["step"] == 36  # epoch 1 ends at its 12th batch, as it would have


@pytest.mark.slow
def test_run_killed_before_a_mid_epoch_validation_resumes_exactly(ewt_slice, tmp_path_factory):
    # Validation after every 6th batch: the step-18 checkpoint precedes epoch 1's first one.
    options = (*SHORT_EPOCHS, "--trainer.val_check_interval=0.5")
    uninterrupted = tmp_path_factory.mktemp("uninterrupted-mid")
    result = _fit(ewt_slice, uninterrupted, *options)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path_factory.mktemp("killed-mid")
    kill = ("--trainer.callbacks+=resume_helpers.KillAtValidation", "--trainer.callbacks.step=18")
    killed = _fit(ewt_slice, run, *options, *kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 18

    resumed = _fit(ewt_slice, run, *options, f"--ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(_val_acc(uninterrupted)) == 6
    assert _val_acc(run) == _val_acc(uninterrupted)
    _assert_same_weights(_final(run), _final(uninterrupted), steps=36)
