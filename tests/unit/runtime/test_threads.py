"""The thread policy: fewer intra-op threads next to busy processes, the budget when idle.

CPU readings are injected (a fake ``/proc/stat`` reader and clock), so these tests say what the
policy decides, not how fast anything runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from conftest import REPO
from lightning.pytorch.accelerators import CPUAccelerator

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.errors import ConfigError
from seqtag.runtime.thread_policy import (
    CpuTimes,
    ThreadController,
    ThreadPolicy,
    read_cpu_times,
    threads_for,
)
from seqtag.runtime.threads import configure_threads, explicit_threads

TINY = str(REPO / "tests" / "fixtures" / "tiny.conllu")


class FakeMachine:
    """A clock and cumulative CPU times; ``run(seconds, others, own)`` advances both."""

    def __init__(self) -> None:
        self.now = 100.0
        self.busy = 5000.0
        self.own = 10.0
        self.reads = 0

    def clock(self) -> float:
        return self.now

    def reader(self) -> CpuTimes:
        self.reads += 1
        return CpuTimes(busy=self.busy, own=self.own)

    def run(self, seconds: float, others: float, own: float = 1.0) -> None:
        """``seconds`` pass while other processes use ``others`` cores and this one ``own``."""
        self.now += seconds
        self.busy += (others + own) * seconds
        self.own += own * seconds


@pytest.fixture
def no_thread_variables(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SEQTAG_THREADS", raising=False)


@pytest.fixture
def two_threads():
    """Two intra-op threads for the test (the budget of an idle 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _controller(machine: FakeMachine, budget: int = 2, cores: int = 2) -> ThreadController:
    controller = ThreadController(budget, cores, machine.reader, machine.clock)
    controller.start()
    return controller


def _cpu_trainer(processes: int = 1) -> SimpleNamespace:
    return SimpleNamespace(
        accelerator=CPUAccelerator(),
        strategy=SimpleNamespace(num_processes=processes),
        num_devices=processes,
    )


# -- the rule ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("budget", "cores", "others", "expected"),
    [
        (2, 2, 0.0, 2),  # idle machine: the budget
        (2, 2, 0.3, 2),  # a little noise elsewhere
        (2, 2, 1.0, 1),  # one busy process beside us
        (2, 2, 0.6, 1),  # it gets only part of a core while we use two threads
        (2, 2, 2.0, 1),  # never 0
        (2, 2, 5.0, 1),
        (4, 16, 3.0, 4),  # enough free cores: the budget, never more
        (8, 16, 10.2, 6),
        (2, 2, -0.2, 2),  # tick noise below zero
    ],
)
def test_threads_for(budget, cores, others, expected):
    assert threads_for(budget, cores, others) == expected


# -- the controller ----------------------------------------------------------------------------
def test_an_idle_machine_keeps_the_budget():
    machine = FakeMachine()
    controller = _controller(machine)
    for _ in range(5):
        machine.run(2.0, others=0.05, own=2.0)
        assert controller.update() is None
    assert controller.threads == 2
    assert controller.others_busy == pytest.approx(0.05)


def test_one_busy_core_of_two_leaves_one_thread_at_once():
    machine = FakeMachine()
    controller = _controller(machine)
    machine.run(0.2, others=1.0, own=1.0)
    assert controller.update() == 1  # the first estimate applies without confirmation
    assert controller.threads == 1


def test_two_busy_cores_leave_one_thread_not_zero():
    machine = FakeMachine()
    controller = _controller(machine)
    machine.run(0.2, others=2.0, own=0.5)
    assert controller.update() == 1


def test_a_change_needs_two_checks_in_a_row():
    machine = FakeMachine()
    controller = _controller(machine)
    machine.run(0.2, others=1.0)
    assert controller.update() == 1
    # The other process stops for one check, then is back: no change.
    machine.run(2.0, others=0.0)
    assert controller.update() is None
    machine.run(2.0, others=1.0)
    assert controller.update() is None
    # Alternating load never confirms a change.
    for others in (0.0, 1.0, 0.0, 1.0):
        machine.run(2.0, others=others)
        assert controller.update() is None
    assert controller.threads == 1
    # Gone for two checks in a row: back to the budget.
    machine.run(2.0, others=0.0)
    assert controller.update() is None
    machine.run(2.0, others=0.0)
    assert controller.update() == 2


def test_no_proc_stat_means_no_decision():
    controller = ThreadController(2, 2, reader=lambda: None)
    controller.start()
    assert controller.seconds_since_sample() is None
    assert controller.update() is None
    assert controller.threads == 2


def test_read_cpu_times_counts_the_usable_cores_only(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text(
        "cpu  300 0 30 900 10 0 0 0 50 0\n"
        "cpu0 100 0 10 300 5 0 0 0 50 0\n"
        "cpu1 200 0 20 600 5 1 1 2 0 0\n"
        "intr 1 2 3\n"
    )
    ticks = os.sysconf("SC_CLK_TCK")
    assert read_cpu_times(stat, cpus={0, 1}).busy == pytest.approx((110 + 224) / ticks)
    assert read_cpu_times(stat, cpus={1}).busy == pytest.approx(224 / ticks)
    assert read_cpu_times(stat, cpus={0}).own > 0
    assert read_cpu_times(stat, cpus={7}) is None
    assert read_cpu_times(tmp_path / "missing", cpus={0}) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs /proc/stat")
def test_read_cpu_times_reads_this_machine():
    first = read_cpu_times()
    sum(i * i for i in range(200_000))
    second = read_cpu_times()
    assert first is not None and second is not None
    assert second.own >= first.own and second.busy >= first.busy


# -- explicit choices --------------------------------------------------------------------------
def test_explicit_threads(monkeypatch, no_thread_variables):
    assert explicit_threads() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert explicit_threads() == 3
    monkeypatch.setenv("SEQTAG_THREADS", "1")
    assert explicit_threads() == 1  # seqtag's own variable wins
    for bad in ("0", "two", "", "4097", "99999999999999999999"):  # torch overflows on huge
        monkeypatch.setenv("SEQTAG_THREADS", bad)
        with pytest.raises(ConfigError, match="SEQTAG_THREADS must be a whole number"):
            explicit_threads()


def test_seqtag_threads_sets_the_count(monkeypatch, no_thread_variables, two_threads):
    monkeypatch.setenv("SEQTAG_THREADS", "1")
    assert configure_threads(_cpu_trainer()) == 1
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize(("variable", "value"), [("OMP_NUM_THREADS", "2"), ("SEQTAG_THREADS", "2")])
def test_an_explicit_count_is_kept(monkeypatch, no_thread_variables, two_threads, variable, value):
    monkeypatch.setenv(variable, value)
    machine = FakeMachine()
    policy = ThreadPolicy(interval_s=0.0)
    policy.reader, policy.clock = machine.reader, machine.clock
    policy.setup(_cpu_trainer(), None, "fit")
    for _ in range(4):
        machine.run(2.0, others=1.0)
        policy.on_train_batch_start(None)
    assert policy.controller is None
    assert machine.reads == 0
    assert torch.get_num_threads() == 2


def test_disabled_does_nothing(no_thread_variables, two_threads):
    machine = FakeMachine()
    policy = ThreadPolicy(enabled=False, interval_s=0.0)
    policy.reader, policy.clock = machine.reader, machine.clock
    policy.setup(_cpu_trainer(), None, "fit")
    machine.run(2.0, others=2.0)
    policy.on_train_batch_start(None)
    assert machine.reads == 0
    assert torch.get_num_threads() == 2


def test_bad_options_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"threads\.enabled must be true or false"):
        ThreadPolicy(enabled="yes")
    with pytest.raises(ConfigError, match=r"threads\.interval_s must be a number >= 0"):
        ThreadPolicy(interval_s=-1)


# -- the callback ------------------------------------------------------------------------------
def test_the_callback_checks_at_most_every_interval(no_thread_variables, two_threads):
    machine = FakeMachine()
    policy = ThreadPolicy(interval_s=2.0)
    policy.reader, policy.clock = machine.reader, machine.clock
    policy.setup(_cpu_trainer(), None, "fit")
    assert machine.reads == 1  # the start of the first window
    machine.run(0.05, others=1.0)
    policy.on_train_batch_start(None)
    assert machine.reads == 1  # too short a window for the first estimate
    machine.run(0.1, others=1.0)
    policy.on_train_batch_start(None)
    assert machine.reads == 2 and torch.get_num_threads() == 1
    for hook in ("on_train_batch_start", "on_validation_batch_start", "on_test_batch_start"):
        machine.run(0.5, others=0.0)
        getattr(policy, hook)(None)
    assert machine.reads == 2  # 1.5 s: no check yet
    machine.run(0.5, others=0.0)
    policy.on_predict_batch_start(None)
    assert machine.reads == 3 and torch.get_num_threads() == 1  # one idle check: not yet
    machine.run(2.0, others=0.0)
    policy.on_train_batch_start(None)
    assert machine.reads == 4 and torch.get_num_threads() == 2
    machine.run(2.0, others=1.0)
    policy.on_train_batch_start(None)
    assert torch.get_num_threads() == 2
    policy.teardown(None, None, "fit")
    assert torch.get_num_threads() == 2 and policy.controller is None


def test_a_failed_stage_restores_the_budget(no_thread_variables, two_threads):
    machine = FakeMachine()
    policy = ThreadPolicy(interval_s=0.0)
    policy.reader, policy.clock = machine.reader, machine.clock
    policy.setup(_cpu_trainer(), None, "fit")
    machine.run(0.5, others=1.0)
    policy.on_train_batch_start(None)
    assert torch.get_num_threads() == 1
    policy.on_exception(None, None, RuntimeError("boom"))
    assert torch.get_num_threads() == 2 and policy.controller is None


def test_without_proc_stat_the_callback_stays_off(no_thread_variables, two_threads):
    policy = ThreadPolicy(interval_s=0.0)
    policy.reader = lambda: None
    policy.setup(_cpu_trainer(), None, "fit")
    assert policy.controller is None
    policy.on_train_batch_start(None)
    assert torch.get_num_threads() == 2


def test_under_cpu_ddp_the_budget_is_the_process_share(no_thread_variables, two_threads):
    machine = FakeMachine()
    policy = ThreadPolicy(interval_s=0.0)
    policy.reader, policy.clock = machine.reader, machine.clock
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    policy.setup(_cpu_trainer(processes=max(2, cores)), None, "fit")
    assert torch.get_num_threads() == 1
    assert policy.controller is None  # one thread: nothing to give away


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores")
def test_fit_with_the_policy_lowers_then_restores_threads(
    tmp_path, no_thread_variables, two_threads
):
    machine = FakeMachine()
    policy = ThreadPolicy(interval_s=0.0)
    policy.reader, policy.clock = machine.reader, machine.clock
    seen: list[int] = []

    class Busy(pl.Callback):
        """Another process takes a whole core while this one trains."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            machine.run(0.5, others=1.0)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.append(torch.get_num_threads())

    data = TaggingDataModule(train_path=TINY, val_path=TINY, batch_size=1)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Busy(), policy],
    )
    trainer.fit(SequenceTagger(hidden_size=8), datamodule=data)
    assert seen and seen[-1] == 1
    assert torch.get_num_threads() == 2  # the budget again after fit
    assert policy.controller is None


# -- the command -------------------------------------------------------------------------------
def _command(args: list[str], **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environment.update(env, OMP_DISPLAY_ENV="VERBOSE")
    return subprocess.run(
        [sys.executable, "-m", "seqtag", *args],
        env=environment,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def _spin_count(stderr: str) -> str | None:
    for line in stderr.splitlines():
        if "GOMP_SPINCOUNT" in line:
            return line.split("=", 1)[1].strip().strip("'")
    return None


def test_the_command_adapts_threads_by_default_and_leaves_openmp_waits_alone():
    done = _command(["fit", "--print_config"])
    assert done.returncode == 0, done.stderr
    assert "threads:\n  enabled: true\n  interval_s: 2.0\n" in done.stdout
    if _spin_count(done.stderr) is None:
        pytest.skip("torch's OpenMP is not libgomp")
    assert _spin_count(done.stderr) != "0"  # libgomp's default: spin a while (faster idle)


def test_deterministic_runs_keep_their_thread_count(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SEQTAG_THREADS", raising=False)
    policy = ThreadPolicy()
    controllers = []

    class Watch(pl.Callback):
        def on_train_batch_start(self, *args) -> None:
            controllers.append(policy.controller)

    data = TaggingDataModule(train_path=str(REPO / "tests" / "fixtures" / "tiny.conllu"))
    for deterministic in (False, True):
        controllers.clear()
        trainer = pl.Trainer(
            max_epochs=1,
            deterministic=deterministic,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[policy, Watch()],
        )
        try:
            trainer.fit(SequenceTagger(hidden_size=8), datamodule=data)
        finally:
            torch.use_deterministic_algorithms(False)
        assert controllers
        adapting = any(controller is not None for controller in controllers)
        assert adapting is (not deterministic and torch.get_num_threads() > 1)
