"""Shared fixtures: where the shared corpora are, and small slices of real data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data"
DATA = REPO / "data"

# benchmarks/ is a folder of scripts, not a package: its helpers are imported by module name.
sys.path.append(str(REPO / "benchmarks"))
from corpus_slice import head_sentences  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def private_vector_cache(tmp_path_factory):
    """Tests (and the seqtag processes they start) never write the user's ~/.cache."""
    previous = os.environ.get("SEQTAG_CACHE_DIR")
    os.environ["SEQTAG_CACHE_DIR"] = str(tmp_path_factory.mktemp("seqtag-cache"))
    yield
    if previous is None:
        os.environ.pop("SEQTAG_CACHE_DIR", None)
    else:
        os.environ["SEQTAG_CACHE_DIR"] = previous


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data; skips the test when the shared folder is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture(scope="session")
def ewt_slice(tmp_path_factory) -> dict[str, Path]:
    """300/100/101 sentences of the shipped EWT data (an odd test count on purpose)."""
    folder = tmp_path_factory.mktemp("ewt")
    ewt = DATA / "ud_en_ewt"
    return {
        "train": head_sentences(ewt / "en_ewt-ud-train.conllu.gz", folder / "train.conllu", 300),
        "dev": head_sentences(ewt / "en_ewt-ud-dev.conllu.gz", folder / "dev.conllu", 100),
        "test": head_sentences(ewt / "en_ewt-ud-test.conllu.gz", folder / "test.conllu", 101),
    }


def train_checkpoint(folder: Path, data, model, *, epochs: int = 1, seed: int = 0) -> Path:
    """Train ``model`` on ``data`` with a quiet plain ``Trainer``; save its checkpoint."""
    import lightning.pytorch as pl

    pl.seed_everything(seed)
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=folder,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    path = folder / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(autouse=True)
def restore_deterministic_algorithms():
    """Put torch's global deterministic-algorithms flag back after every test.

    ``Trainer(deterministic=True)`` turns it on for the whole process and leaves it on, and
    seqtag's thread policy stays off while it is on (results must not depend on load): a test
    training deterministically would otherwise change what later tests in the process see.
    """
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: tiny models train many times faster on one thread, and
    two threads next to another busy job on a 2-core machine ran up to 100x slower. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_seqtag(*args: str, cwd: Path, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """``python -m seqtag ARGS`` in ``cwd`` on one thread, its stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "seqtag", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit status 1, no traceback, and exactly one ``seqtag: error:`` line holding ``message``."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("seqtag: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
