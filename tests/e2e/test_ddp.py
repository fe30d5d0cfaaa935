"""DDP on the CPU: two gloo processes give exactly the single-process numbers.

The slow tests run the ``seqtag`` command in subprocesses (DDP launches its second process by
re-running the command). :class:`BatchRecorder`, passed with ``--trainer.callbacks+=``, writes
the sentence positions of every batch each process ran, so the tests can check the sharding
itself and not only the metrics it produces.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from conftest import REPO
from lightning.pytorch.accelerators import CPUAccelerator

from seqtag.data.datamodule import TaggingDataModule
from seqtag.data.io.formats import read_corpus
from seqtag.errors import ConfigError
from seqtag.runtime.threads import configure_threads, thread_budget

UPOS_CONFIG = REPO / "configs" / "ud_ewt_upos.yaml"
DDP_CONFIG = REPO / "configs" / "trainer" / "ddp_cpu.yaml"
RECORD_ENV = "SEQTAG_TEST_BATCH_RECORD"


class BatchRecorder(pl.Callback):
    """Writes ``{key: [[sentence positions of a batch], ...]}`` per stage and rank as JSON.

    Keys are ``train/EPOCH``, ``test`` and ``predict``; files go to ``$SEQTAG_TEST_BATCH_RECORD``
    as ``STAGE-rankR.json``.
    """

    def __init__(self) -> None:
        self.batches: dict[str, list[list[int]]] = {}

    def _add(self, key: str, batch: dict[str, Any]) -> None:
        self.batches.setdefault(key, []).append(batch["index"].tolist())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._add(f"train/{trainer.current_epoch}", batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._add("test", batch)

    def on_predict_batch_start(
        self, trainer, pl_module, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._add("predict", batch)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        folder = Path(os.environ[RECORD_ENV])
        path = folder / f"{trainer.state.fn.value}-rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.batches), encoding="utf-8")
        self.batches = {}


# -- threads (fast) -------------------------------------------------------------------------
def test_thread_budget_shares_the_cores():
    assert thread_budget(2, cores=2) == 1
    assert thread_budget(2, cores=16) == 8
    assert thread_budget(3, cores=2) == 1  # never zero
    assert thread_budget(1, cores=4) == 4
    with pytest.raises(ValueError):
        thread_budget(0, cores=2)


def _fake_trainer(processes: int, accelerator: Any = None) -> SimpleNamespace:
    return SimpleNamespace(
        accelerator=CPUAccelerator() if accelerator is None else accelerator,
        strategy=SimpleNamespace(num_processes=processes),
        num_devices=processes,
    )


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_configure_threads_caps_cpu_processes(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("seqtag.runtime.threads.usable_cores", lambda: 4)
    torch.set_num_threads(4)
    assert configure_threads(_fake_trainer(2)) == 2
    assert torch.get_num_threads() == 2
    assert configure_threads(_fake_trainer(1)) == 2  # lowered only, never raised


def test_configure_threads_leaves_explicit_settings_and_gpus_alone(monkeypatch, restore_threads):
    monkeypatch.setattr("seqtag.runtime.threads.usable_cores", lambda: 4)
    torch.set_num_threads(4)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert configure_threads(_fake_trainer(2)) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert configure_threads(_fake_trainer(2, accelerator=object())) is None
    assert torch.get_num_threads() == 4


def test_evaluation_with_fewer_sentences_than_processes_is_a_config_error(monkeypatch):
    tiny = REPO / "tests" / "fixtures" / "tiny.conllu"  # 2 sentences
    datamodule = TaggingDataModule(train_path=str(tiny), test_path=str(tiny))
    datamodule.setup("fit")
    monkeypatch.setattr("seqtag.data.sampling.world", lambda: (3, 0))
    with pytest.raises(ConfigError, match=r"2 sentence.*3 processes"):
        datamodule.test_dataloader()
    monkeypatch.setattr("seqtag.data.sampling.world", lambda: (2, 1))
    assert [len(batch) for batch in datamodule.test_dataloader().sampler] == [1]


# -- end to end under DDP (slow) -------------------------------------------------------------
def _seqtag(
    command: str, args: Sequence[str], record: Path, ddp: bool = False
) -> subprocess.CompletedProcess:
    record.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env[RECORD_ENV] = str(record)
    # this module, for its BatchRecorder, and tests/ for the conftest it imports
    paths = [str(Path(__file__).resolve().parent), str(REPO / "tests"), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    # DDP: each process takes its share of the cores. One process: one thread too, as on a
    # shared machine a second OpenMP thread waiting for a busy core slows the run many times.
    env.pop("OMP_NUM_THREADS", None)
    if not ddp:
        env["OMP_NUM_THREADS"] = "1"
    overlay = ["--config", str(DDP_CONFIG)] if ddp else []
    argv = [sys.executable, "-m", "seqtag", command, *args[:2], *overlay, *args[2:]]
    argv += ["--trainer.callbacks+=test_ddp.BatchRecorder"]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def _metrics(save_dir: Path) -> dict[str, str]:
    """Each metric of the CSV logger's metrics.csv (its last value), as written: every digit."""
    (path,) = save_dir.glob("*/version_*/metrics.csv")
    with path.open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    return {key: value for row in rows for key, value in row.items() if value != ""}


def _recorded(record: Path, stage: str) -> list[dict[str, list[list[int]]]]:
    ranks = sorted(record.glob(f"{stage}-rank*.json"))
    return [json.loads(path.read_text(encoding="utf-8")) for path in ranks]


def _assert_sentences_once(shards: list[list[list[int]]], count: int) -> None:
    """Every sentence in exactly one batch of one rank."""
    flat = sorted(i for shard in shards for batch in shard for i in batch)
    assert flat == list(range(count)), "a sentence was skipped or seen twice"


def _assert_evaluated_once(shards: list[list[list[int]]], count: int) -> None:
    """Evaluation: every sentence once, and the ranks' shards differ by one sentence at most."""
    _assert_sentences_once(shards, count)
    sizes = [sum(len(batch) for batch in shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1


def _upos_args(ewt_slice: dict[str, Path], run: Path) -> list[str]:
    return [
        "--config",
        str(UPOS_CONFIG),
        f"--data.train_path={ewt_slice['train']}",
        f"--data.val_path={ewt_slice['dev']}",
        f"--data.test_path={ewt_slice['test']}",
        "--trainer.max_epochs=2",
        f"--trainer.default_root_dir={run}",
        f"--trainer.logger.init_args.save_dir={run}",
        f"--checkpoint.dirpath={run / 'checkpoints'}",
        "--model.init_args.hidden_size=16",
        "--data.batch_size=8",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


@pytest.fixture(scope="module")
def ddp_trained(ewt_slice, tmp_path_factory) -> tuple[list[str], Path, Path]:
    run = tmp_path_factory.mktemp("ddp_fit")
    args = _upos_args(ewt_slice, run)
    _seqtag("fit", args, run / "record", ddp=True)
    return args, run / "checkpoints" / "best.ckpt", run / "record"


@pytest.mark.slow
def test_ddp_fit_gives_ranks_distinct_equal_shards_reshuffled_per_epoch(ddp_trained, ewt_slice):
    _, best, record = ddp_trained
    assert best.is_file()
    ranks = _recorded(record, "fit")
    assert len(ranks) == 2
    sentences = len(read_corpus(ewt_slice["train"], "conllu"))
    for epoch in ("train/0", "train/1"):
        shards = [rank[epoch] for rank in ranks]
        assert len(shards[0]) == len(shards[1]) > 0  # same number of steps on every rank
        # 300 sentences in 38 batches: an even count, so no batch is repeated for padding.
        _assert_sentences_once(shards, sentences)
    for rank in ranks:  # set_epoch reached the sampler: a new order every epoch
        assert rank["train/0"] != rank["train/1"]


@pytest.mark.slow
def test_ddp_test_metrics_equal_single_process(ddp_trained, ewt_slice, tmp_path):
    args, best, _ = ddp_trained
    sentences = read_corpus(ewt_slice["test"], "conllu")
    assert len(sentences) % 2 == 1  # one rank gets one sentence more
    metrics = {}
    for name, ddp in (("single", False), ("ddp", True)):
        out = tmp_path / name
        run_args = [*args, f"--ckpt_path={best}", f"--trainer.logger.init_args.save_dir={out}"]
        # The plots ask for the log folder, a collective under DDP, from every rank.
        run_args.append("--trainer.callbacks+=seqtag.training.reports.ConfusionMatrixPlot")
        _seqtag("test", run_args, out / "record", ddp=ddp)
        metrics[name] = _metrics(out)
        assert len(list(out.rglob("confusion_matrix.png"))) == 1
        assert len(list(out.rglob("reliability.json"))) == 1
        if ddp:
            shards = [rank["test"] for rank in _recorded(out / "record", "test")]
            assert len(shards) == 2
            _assert_evaluated_once(shards, len(sentences))
    single, ddp = metrics["single"], metrics["ddp"]
    assert ddp["test_acc"] == single["test_acc"]  # the same text: every digit
    tokens = sum(len(s.tokens) for s in sentences)
    accuracy = float(single["test_acc"])
    assert 0.2 < accuracy < 1.0
    assert round(accuracy * tokens) / tokens == accuracy  # correct / every test token
    # The loss is a float32 mean per token: equal up to summation order.
    assert float(ddp["test_loss"]) == pytest.approx(float(single["test_loss"]), rel=1e-5)


@pytest.mark.slow
def test_ddp_predict_writes_every_sentence_once_in_input_order(ddp_trained, ewt_slice, tmp_path):
    args, best, _ = ddp_trained
    outputs = {}
    for name, ddp in (("single", False), ("ddp", True)):
        output = tmp_path / f"{name}.conll"
        run_args = [
            *args,
            f"--ckpt_path={best}",
            f"--data.predict_path={ewt_slice['test']}",
            "--data.predict_format=conllu",
            "--data.predict_chunk_size=16",  # 7 chunks: each process writes its own part
            "--prediction.confidences=true",
            f"--prediction.output={output}",
        ]
        _seqtag("predict", run_args, tmp_path / name, ddp=ddp)
        outputs[name] = output.read_text(encoding="utf-8")
    shards = [rank["predict"] for rank in _recorded(tmp_path / "ddp", "predict")]
    sentences = read_corpus(ewt_slice["test"], "conllu")
    _assert_sentences_once(shards, len(sentences))
    for rank, shard in enumerate(shards):  # chunk c of 16 sentences is tagged by rank c % 2
        assert {i for batch in shard for i in batch} == {
            i for i in range(len(sentences)) if (i // 16) % 2 == rank
        }
    blocks = outputs["ddp"].rstrip("\n").split("\n\n")
    assert len(blocks) == len(sentences)
    for block, sentence in zip(blocks, sentences, strict=True):
        assert [line.split("\t")[0] for line in block.split("\n")] == list(sentence.tokens)
    assert outputs["ddp"] == outputs["single"]


def _write_name_corpus(source: Path, target: Path) -> Path:
    """A span corpus (IOB2 columns) from EWT: runs of PROPN are NAME, runs of NUM are NUM."""
    lines = []
    for sentence in read_corpus(source, "conllu"):
        previous = None
        for token, upos in zip(sentence.tokens, sentence.tags, strict=True):
            type_ = {"PROPN": "NAME", "NUM": "NUM"}.get(upos)
            tag = "O" if type_ is None else f"{'I' if type_ == previous else 'B'}-{type_}"
            lines.append(f"{token} {tag}")
            previous = type_
        lines.append("")
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


@pytest.mark.slow
def test_ddp_span_f1_equals_single_process(ewt_slice, tmp_path):
    corpus = {
        split: _write_name_corpus(path, tmp_path / f"{split}.txt")
        for split, path in ewt_slice.items()
    }
    run = tmp_path / "fit"
    args = [
        "--config",
        str(UPOS_CONFIG),
        f"--data.train_path={corpus['train']}",
        f"--data.val_path={corpus['dev']}",
        f"--data.test_path={corpus['test']}",
        "--data.format=columns",
        "--data.tag_scheme=iob2",
        "--data.train_scheme=bioes",
        "--model.init_args.decoder=crf",
        "--model.init_args.hidden_size=16",
        "--optimizer.init_args.lr=0.01",
        "--checkpoint.monitor=val_f1",
        "--trainer.max_epochs=2",
        f"--trainer.default_root_dir={run}",
        f"--checkpoint.dirpath={run / 'checkpoints'}",
        "--data.batch_size=8",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    _seqtag("fit", [*args, f"--trainer.logger.init_args.save_dir={run}"], run / "record")
    tokens = sum(len(s.tokens) for s in read_corpus(corpus["test"], "columns"))
    metrics = {}
    for name, ddp in (("single", False), ("ddp", True)):
        out = tmp_path / name
        run_args = [
            *args,
            f"--ckpt_path={run / 'checkpoints' / 'best.ckpt'}",
            f"--trainer.logger.init_args.save_dir={out}",
        ]
        done = _seqtag("test", run_args, out / "record", ddp=ddp)
        # The conlleval-style report, printed once on rank 0, counts every test token once.
        assert re.search(rf"^processed {tokens} tokens with \d+ phrases", done.stdout, re.M)
        metrics[name] = _metrics(out)
    single, ddp = metrics["single"], metrics["ddp"]
    assert 0.0 < float(single["test_f1"]) < 1.0
    for name in ("test_f1", "test_precision", "test_recall", "test_acc"):
        assert ddp[name] == single[name], name
    # Calibration bins are sums across processes: the ECEs agree up to float rounding.
    eces = ("test_ece", "test_ece_uncalibrated", "test_span_ece", "test_span_ece_uncalibrated")
    for name in eces:
        assert float(ddp[name]) == pytest.approx(float(single[name]), rel=1e-4, abs=1e-6), name


@pytest.mark.slow
def test_ddp_fit_calibrates_on_the_whole_dev_set_once(ddp_trained, ewt_slice, tmp_path):
    """Rank 0 fits the temperature on every dev sentence: ``seqtag calibrate`` (one process)
    finds the same for the checkpoint's weights."""
    _, best, _ = ddp_trained
    stored = torch.load(best, weights_only=True)["state_dict"]["tagger.temperature"]
    assert float(stored) != 1.0
    output = tmp_path / "again.ckpt"
    argv = [f"--ckpt_path={best}", f"--data.val_path={ewt_slice['dev']}", f"--output={output}"]
    done = subprocess.run(
        [sys.executable, "-m", "seqtag", "calibrate", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    again = torch.load(output, weights_only=True)["state_dict"]["tagger.temperature"]
    assert float(again) == pytest.approx(float(stored), rel=1e-4)
