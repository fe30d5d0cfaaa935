"""Trainer, checkpoint and model values that used to end in a traceback (or do nothing).

Each runs the real command (``python -m seqtag fit ...``, through the forking runner of
``test_errors``) on the tiny CoNLL-U corpus with one value broken, and checks: exit status 2
(1 for the ``SEQTAG_THREADS`` environment variable, as for its other bad values), one line
``seqtag: error: OPTION: ...``, no traceback, and nothing written in the run's folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO
from test_errors import run_cases

from seqtag.errors import ConfigError
from seqtag.training.module import SequenceTagger

TINY = REPO / "tests" / "fixtures" / "tiny.conllu"

#: (id, extra arguments, environment, status, what the error line must contain)
CASES = [
    (
        "val-check-interval-0",
        ["--trainer.val_check_interval=0"],
        {},
        2,
        ["trainer.val_check_interval: must be", "got 0"],
    ),
    (
        "accumulate-grad-batches-0",
        ["--trainer.accumulate_grad_batches=0"],
        {},
        2,
        ["trainer.accumulate_grad_batches: must be an integer >= 1, got 0"],
    ),
    (
        "accumulate-grad-batches-negative",
        ["--trainer.accumulate_grad_batches=-1"],
        {},
        2,
        ["trainer.accumulate_grad_batches: must be an integer >= 1, got -1"],
    ),
    (
        "check-val-every-n-epoch-0",
        ["--trainer.check_val_every_n_epoch=0"],
        {},
        2,
        ["trainer.check_val_every_n_epoch: must be an integer >= 1, got 0"],
    ),
    (
        "accelerator-tpu",
        ["--trainer.accelerator=tpu"],
        {},
        2,
        ["trainer.accelerator: tpu is not available on this machine", "cpu"],
    ),
    (
        "gradient-clip-negative",
        ["--trainer.gradient_clip_val=-1"],
        {},
        2,
        ["trainer.gradient_clip_val: must be a number >= 0"],
    ),
    (
        "every-n-train-steps-negative",
        ["--last_checkpoint.every_n_train_steps=-1"],
        {},
        2,
        ["last_checkpoint.every_n_train_steps: must be an integer >= 0, got -1"],
    ),
    (
        "every-n-epochs-negative",
        ["--checkpoint.every_n_epochs=-1"],
        {},
        2,
        ["checkpoint.every_n_epochs: must be an integer >= 0, got -1"],
    ),
    (
        "save-top-k-minus-2",
        ["--checkpoint.save_top_k=-2"],
        {},
        2,
        ["checkpoint.save_top_k: must be an integer >= -1", "got -2"],
    ),
    (
        "mode-middle",
        ["--checkpoint.mode=middle"],
        {},
        2,
        ["checkpoint.mode: must be min or max, got middle"],
    ),
    (
        "monitor-unknown",
        ["--checkpoint.monitor=no_such_metric"],
        {},
        2,
        ["checkpoint.monitor: no_such_metric is not a metric", "val_acc", "val_loss", "val_f1"],
    ),
    (
        "monitor-span-metric-on-pos",
        ["--checkpoint.monitor=val_f1"],
        {},
        2,
        ["checkpoint.monitor: val_f1 is logged only for span tasks", "val_acc, val_loss"],
    ),
    (
        "hidden-size-too-large",
        ["--model.init_args.hidden_size=10000000"],
        {},
        2,
        ["the model does not fit in memory", "model.init_args.hidden_size=10000000"],
    ),
    (
        "seqtag-threads-huge",
        [],
        {"SEQTAG_THREADS": "99999999999999999999"},
        1,
        ["SEQTAG_THREADS must be a whole number from 1 to 4096, got '99999999999999999999'"],
    ),
]


def _fit(run: Path, *extra: str) -> list[str]:
    return [
        "fit",
        f"--data.train_path={TINY}",
        f"--data.val_path={TINY}",
        "--trainer.max_epochs=1",
        "--model.init_args.hidden_size=8",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={run}",
        f"--checkpoint.dirpath={run / 'checkpoints'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str, str]]:
    folder = tmp_path_factory.mktemp("run-options")
    jobs = {name: (_fit(folder / name, *extra), env) for name, extra, env, _, _ in CASES}
    jobs["valid"] = (_fit(folder / "valid", "--checkpoint.monitor=val_loss"), {})
    results = run_cases(jobs, folder / "outcomes")
    return {name: (*results[name], folder / name) for name in results}


@pytest.mark.parametrize(
    ("name", "expected_status", "expected"),
    [(name, status, expected) for name, _, _, status, expected in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_run_option_is_one_line_before_anything_runs(name, expected_status, expected, outcomes):
    status, _, stderr, run = outcomes[name]
    assert "Traceback" not in stderr, stderr
    assert status == expected_status, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("seqtag: error:")]
    assert len(errors) == 1, stderr
    for fragment in expected:
        assert fragment in errors[0], errors[0]
    assert not run.exists() or not any(run.rglob("*")), sorted(run.rglob("*"))


def test_the_checks_leave_valid_values_alone(outcomes):
    status, _, stderr, run = outcomes["valid"]
    assert status == 0, stderr
    assert (run / "checkpoints" / "best.ckpt").is_file()


def test_a_network_too_large_for_memory_is_a_config_error():
    with pytest.raises(ConfigError, match=r"does not fit in memory \(model\.hidden_size=10000000"):
        SequenceTagger(hidden_size=10_000_000)


def test_a_failed_allocation_is_a_config_error(monkeypatch):
    """Where the machine's memory cannot be read, the allocation itself fails: same error."""
    monkeypatch.setattr("seqtag.training.network.memory_bytes", lambda: None)
    with pytest.raises(ConfigError, match=r"does not fit in memory.*allocating its parameters"):
        SequenceTagger(hidden_size=10_000_000)
