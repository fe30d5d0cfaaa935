"""Two "nodes" on this machine: torchrun's multi-node launch gives one node's DDP results.

Each node is a ``torchrun --nnodes 2 --nproc_per_node 1 --node_rank R`` process on 127.0.0.1
(static rendezvous, gloo on the CPU) running ``seqtag fit``, then ``seqtag test`` and
``seqtag predict`` with ``--trainer.num_nodes 2 --trainer.devices 1``; Lightning reads
torchrun's environment (``TorchElasticEnvironment``). The same runs on one node with
``--trainer.devices 2 --trainer.strategy ddp`` (``configs/trainer/ddp_cpu.yaml``, through
``test_ddp``'s helpers) must give the same metrics, weights, shards and predictions: two
processes are two processes, whether they share a machine or not.

Both nodes here share one folder, so the checkpoints rank 0 writes are where node 1 looks for
them; on a real cluster the checkpoint folder and the data must be on a shared filesystem (or
the data copied to every node at the same path), as docs/scaling.md says.

Each node runs one torch thread (``OMP_NUM_THREADS=1``): both "nodes" share this machine's
cores, and one DDP process per core is also what the single-node run gets.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from conftest import REPO
from doc_blocks import free_port
from test_ddp import (
    RECORD_ENV,
    _assert_evaluated_once,
    _assert_sentences_once,
    _metrics,
    _recorded,
    _seqtag,
    _upos_args,
)

from seqtag.data.io.formats import read_corpus

pytestmark = pytest.mark.slow

NODES = 2
#: Each seqtag run (both nodes together) must end within this many seconds.
TIMEOUT_S = 600
#: What seqtag needs to know that it is one process of a two-node run.
MULTINODE = [
    f"--trainer.num_nodes={NODES}",
    "--trainer.devices=1",
    "--trainer.strategy=ddp",
    "--trainer.accelerator=cpu",
]
#: A rendezvous port taken between choosing it and binding it: the launch is tried again.
PORT_TAKEN = re.compile(r"address already in use|EADDRINUSE", re.I)


def _node_env(record: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[RECORD_ENV] = str(record)
    # test_ddp (its BatchRecorder) and tests/ (the conftest it imports) for the seqtag processes
    paths = [str(Path(__file__).resolve().parent), str(REPO / "tests"), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _kill(process: subprocess.Popen) -> None:
    """End a node and everything it started (torchrun's agent and its worker), even a worker
    left behind by an agent that has exited."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _launch(command: str, args: Sequence[str], folder: Path, port: int) -> list[str]:
    """Both nodes' ``seqtag COMMAND ARGS``; their outputs, node 0's first.

    Each node runs in a session of its own, so a node that fails or hangs is killed with its
    worker and the other node with it.
    """
    record = folder / "record"
    record.mkdir(parents=True, exist_ok=True)
    env = _node_env(record)
    seqtag = [*args, *MULTINODE, "--trainer.callbacks+=test_ddp.BatchRecorder"]
    nodes, logs = [], []
    for rank in range(NODES):
        argv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={NODES}",
            "--nproc_per_node=1",
            f"--node_rank={rank}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            "-m",
            "seqtag",
            command,
            *seqtag,
        ]
        log = folder / f"{command}-node{rank}.log"
        with log.open("w", encoding="utf-8") as stream:
            nodes.append(
                subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=env,
                    stdout=stream,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        logs.append(log)
    try:
        failure = _wait(nodes)
    finally:
        for node in nodes:
            _kill(node)
    outputs = [log.read_text(encoding="utf-8", errors="replace") for log in logs]
    if failure:
        shown = "\n".join(
            f"--- node {rank} ({logs[rank]}):\n{output[-5000:]}"
            for rank, output in enumerate(outputs)
        )
        raise NodeFailure(f"seqtag {command} on {NODES} nodes: {failure}\n{shown}")
    return outputs


def _wait(nodes: list[subprocess.Popen]) -> str | None:
    """Wait for every node; what went wrong, as soon as one node fails (the other would wait
    for it until the collective times out, half an hour), or ``None``."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        for rank, node in enumerate(nodes):
            if node.poll() not in (None, 0):
                return f"node {rank} exited with status {node.returncode}"
        if all(node.poll() == 0 for node in nodes):
            return None
        time.sleep(0.5)
    return f"the nodes did not finish in {TIMEOUT_S} s"


class NodeFailure(AssertionError):
    """A multi-node run that failed, with both nodes' output."""


def _multinode(command: str, args: Sequence[str], folder: Path) -> list[str]:
    """:func:`_launch` on a free port, once more if the port was taken in the meantime."""
    for attempt in range(2):
        try:
            return _launch(command, args, folder, free_port())
        except NodeFailure as failure:
            if attempt or not PORT_TAKEN.search(str(failure)):
                raise
    raise AssertionError("unreachable")


def _printed_results(stdout: str) -> dict[str, str]:
    """The test metrics of Lightning's printed results table, as printed."""
    rows = re.findall(r"^\W*(test_\w+)\W+([-+\d.e]+(?:nan|inf)?)\W*$", stdout, re.M)
    return dict(rows)


@pytest.fixture(scope="module")
def runs(ewt_slice, tmp_path_factory) -> dict[str, dict]:
    """One node with 2 DDP processes, and 2 nodes with one process each: fit, test, predict."""
    done: dict[str, dict] = {}
    for name in ("one_node", "two_nodes"):
        run = tmp_path_factory.mktemp(name)
        args = _upos_args(ewt_slice, run)
        best = run / "checkpoints" / "best.ckpt"
        out = run / "test"
        # The plots ask for the log folder, a collective under DDP, from every rank.
        test_args = [
            *args,
            f"--ckpt_path={best}",
            f"--trainer.logger.init_args.save_dir={out}",
            "--trainer.callbacks+=seqtag.training.reports.ConfusionMatrixPlot",
        ]
        tagged = run / "predict"
        predict_args = [
            *args,
            f"--ckpt_path={best}",
            f"--data.predict_path={ewt_slice['test']}",
            "--data.predict_format=conllu",
            "--data.predict_chunk_size=16",  # 7 chunks: each process writes its own part
            "--prediction.confidences=true",
            f"--prediction.output={tagged / 'tagged.conll'}",
        ]
        if name == "one_node":
            _seqtag("fit", args, run / "record", ddp=True)
            stdout = _seqtag("test", test_args, out / "record", ddp=True).stdout
            _seqtag("predict", predict_args, tagged / "record", ddp=True)
        else:
            _multinode("fit", args, run)
            stdout, other = _multinode("test", test_args, out)
            # Lightning prints the results on global rank 0 only: node 1 prints no table.
            assert _printed_results(other) == {}, other[-3000:]
            _multinode("predict", predict_args, tagged)
        done[name] = {"run": run, "best": best, "test": out, "stdout": stdout, "tagged": tagged}
    return done


def test_two_nodes_train_as_one_node_with_two_processes(runs):
    one, two = runs["one_node"], runs["two_nodes"]
    fitted = {name: _metrics(runs[name]["run"]) for name in runs}
    assert {"val_acc", "val_loss"} <= set(fitted["one_node"])
    assert fitted["two_nodes"] == fitted["one_node"]  # every logged value, every digit
    weights = [torch.load(r["best"], weights_only=True)["state_dict"] for r in (one, two)]
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    assert (two["run"] / "checkpoints" / "last.ckpt").is_file()


def test_two_nodes_shard_the_data_as_one_node(runs, ewt_slice):
    sentences = len(read_corpus(ewt_slice["train"], "conllu"))
    ranks = {name: _recorded(runs[name]["run"] / "record", "fit") for name in runs}
    assert len(ranks["two_nodes"]) == NODES  # one record per global rank: 0 and 1
    for epoch in ("train/0", "train/1"):
        shards = [rank[epoch] for rank in ranks["two_nodes"]]
        assert len(shards[0]) == len(shards[1]) > 0
        _assert_sentences_once(shards, sentences)  # distinct shards, every sentence once
    assert ranks["two_nodes"] == ranks["one_node"]  # global rank r: the same batches


def test_two_nodes_test_metrics_equal_one_node(runs, ewt_slice):
    one, two = runs["one_node"], runs["two_nodes"]
    tested = {name: _metrics(runs[name]["test"]) for name in runs}
    assert 0.2 < float(tested["one_node"]["test_acc"]) < 1.0
    assert tested["two_nodes"] == tested["one_node"]
    printed = {name: _printed_results(runs[name]["stdout"]) for name in runs}
    assert {"test_acc", "test_loss"} <= set(printed["one_node"])
    assert printed["two_nodes"] == printed["one_node"]
    # The report is written once, by global rank 0, after a collective both nodes joined.
    assert len(list(two["test"].rglob("confusion_matrix.png"))) == 1
    shards = [rank["test"] for rank in _recorded(two["test"] / "record", "test")]
    assert len(shards) == NODES
    _assert_evaluated_once(shards, len(read_corpus(ewt_slice["test"], "conllu")))
    assert shards == [rank["test"] for rank in _recorded(one["test"] / "record", "test")]


def test_two_nodes_predict_one_output_as_one_node(runs, ewt_slice):
    """Every process writes its chunks beside the output, global rank 0 joins them."""
    outputs = {name: runs[name]["tagged"] / "tagged.conll" for name in runs}
    assert sorted(p.name for p in runs["two_nodes"]["tagged"].iterdir()) == [
        "predict-node0.log",
        "predict-node1.log",
        "record",
        "tagged.conll",
    ]  # no part left behind
    text = outputs["two_nodes"].read_text(encoding="utf-8")
    assert text == outputs["one_node"].read_text(encoding="utf-8")
    sentences = read_corpus(ewt_slice["test"], "conllu")
    assert len(text.rstrip("\n").split("\n\n")) == len(sentences)
    record = runs["two_nodes"]["tagged"] / "record"
    shards = [rank["predict"] for rank in _recorded(record, "predict")]
    assert len(shards) == NODES
    _assert_sentences_once(shards, len(sentences))
