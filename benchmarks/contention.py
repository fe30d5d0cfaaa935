"""Training speed next to other busy processes, with seqtag's thread policy on and off.

    python benchmarks/contention.py [--steps 80] [--warmup 10] [--wait-policy passive]
                                    [--output benchmarks/contention.json]

Measures the way users meet a shared machine (issue 17, item 3), each scenario in fresh
processes, the default word model (BiLSTM 1x256, softmax, the shipped 100-d vectors) training
on the head of UD English EWT with batches of 32 sentences through a plain ``Trainer``:

- ``idle-today``: alone, policy off, OpenMP's wait policy unset (seqtag before the policy);
  every ratio is against this run.
- ``idle``: alone, policy off / on.
- ``busy-python``: beside one busy single-threaded process (``while True: pass``).
- ``numpy-blas``: beside numpy matrix products on 2 threads (OpenBLAS/OpenMP threads 2).
- ``two-runs``: two trainings at once; the figure is their combined tokens/s over the time
  both ran, against one run alone.

Neighbours start before the run and stop after it. Runs wait until their data and model are
loaded, then start together, so start-up is not timed. ``--wait-policy`` sets
``OMP_WAIT_POLICY`` for every training process except ``idle-today`` (``passive`` is what the
``seqtag`` command uses; ``unset`` is libgomp's own default, spin a while, then sleep).

The table gives tokens/s, median step time, the thread counts the runs used, and
``slowdown`` (idle-today tokens/s / scenario tokens/s; for ``two-runs``, ``work`` = combined
tokens/s / idle-today's). ``--worker`` runs one training (what the parent starts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EWT_TRAIN = REPO / "data" / "ud_en_ewt" / "en_ewt-ud-train.conllu.gz"
VECTORS = REPO / "data" / "vectors" / "w2v-en-100d-ewt.bin"
TRAIN_SENTENCES = 4000
BATCH_SIZE = 32
BUSY_PYTHON = "while True: pass"
NUMPY_BLAS = (
    "import numpy as np\n"
    "a = np.random.rand(768, 768); b = np.random.rand(768, 768)\n"
    "while True: a @ b\n"
)


# -- one training, in this process --------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    """Train ``warmup + steps`` steps; print one JSON line of per-step times and threads."""
    import logging
    import warnings

    import lightning.pytorch as pl
    import torch
    from corpus_slice import head_sentences

    from seqtag import SequenceTagger, TaggingDataModule
    from seqtag.runtime.thread_policy import ThreadPolicy

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "seqtag"):
        logging.getLogger(name).setLevel(logging.ERROR)

    scratch = Path(args.scratch)
    train = scratch / "train.conllu"
    if not train.exists():
        head_sentences(EWT_TRAIN, scratch / f"train.{os.getpid()}", TRAIN_SENTENCES).replace(train)
    pl.seed_everything(0, verbose=False)
    data = TaggingDataModule(
        train_path=str(train),
        format="conllu",
        tag_field="upos",
        batch_size=BATCH_SIZE,
        vectors=str(VECTORS),
    )
    data.prepare_data()
    data.setup("fit")
    model = SequenceTagger(spec=data.spec)
    steps: list[tuple[float, float, int, int]] = []

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.start = time.monotonic()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            tokens = int(batch["lengths"].sum())
            steps.append((self.start, time.monotonic(), tokens, torch.get_num_threads()))

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ThreadPolicy(enabled=args.policy == "on"), Timer()],
        default_root_dir=str(scratch),
    )
    Path(args.ready).touch()
    while not Path(args.go).exists():
        time.sleep(0.01)
    trainer.fit(model, datamodule=data)
    timed = steps[args.warmup :]
    print(
        json.dumps(
            {
                "steps": [[s, e, n] for s, e, n, _ in timed],
                "threads": dict(Counter(t for *_, t in timed)),
                "wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
            }
        )
    )


# -- parent -------------------------------------------------------------------------------------
def summary(run: dict) -> dict:
    steps = run["steps"]
    seconds = steps[-1][1] - steps[0][0]
    return {
        "tokens_per_second": sum(n for *_, n in steps) / seconds,
        "median_step_ms": 1e3 * statistics.median(e - s for s, e, _ in steps),
        "threads": run["threads"],
    }


def overlap_tokens_per_second(runs: list[dict]) -> float:
    """Combined tokens/s of runs over the time all of them were training."""
    start = max(r["steps"][0][0] for r in runs)
    end = min(r["steps"][-1][1] for r in runs)
    if end <= start:
        return float("nan")
    tokens = sum(n for r in runs for s, e, n in r["steps"] if s >= start and e <= end)
    return tokens / (end - start)


def scenario(
    args: argparse.Namespace,
    scratch: Path,
    *,
    policy: str,
    runs: int = 1,
    neighbour: str | None = None,
    wait_policy: str,
) -> list[dict]:
    """Start the neighbour and ``runs`` workers, release them together, collect their JSON."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SEQTAG_THREADS")}
    env.pop("OMP_WAIT_POLICY", None)
    if wait_policy != "unset":
        env["OMP_WAIT_POLICY"] = wait_policy.upper()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    go = scratch / f"go.{time.monotonic_ns()}"
    workers, ready = [], []
    for index in range(runs):
        ready.append(scratch / f"ready.{time.monotonic_ns()}.{index}")
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            *("--policy", policy, "--steps", str(args.steps), "--warmup", str(args.warmup)),
            *("--scratch", str(scratch), "--ready", str(ready[-1]), "--go", str(go)),
        ]
        workers.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=REPO)
        )
    busy = None
    try:
        while not all(path.exists() for path in ready):
            if any(w.poll() is not None for w in workers):
                raise RuntimeError("a training process ended before it was ready")
            time.sleep(0.05)
        if neighbour is not None:
            neighbour_env = {**env, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
            busy = subprocess.Popen([sys.executable, "-c", neighbour], env=neighbour_env)
            time.sleep(1.0)  # the neighbour is busy before the run starts
        go.touch()
        outputs = [w.communicate()[0] for w in workers]
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    if any(w.returncode for w in workers):
        raise RuntimeError(f"a training process failed: {[w.returncode for w in workers]}")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


SCENARIOS = [
    # name, policy, runs, neighbour
    ("idle", "off", 1, None),
    ("idle", "on", 1, None),
    ("busy-python", "off", 1, BUSY_PYTHON),
    ("busy-python", "on", 1, BUSY_PYTHON),
    ("numpy-blas", "off", 1, NUMPY_BLAS),
    ("numpy-blas", "on", 1, NUMPY_BLAS),
    ("two-runs", "off", 2, None),
    ("two-runs", "on", 2, None),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=80, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--wait-policy", choices=("passive", "active", "unset"), default="passive")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "contention.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--policy", choices=("on", "off"), default="on", help=argparse.SUPPRESS)
    for hidden in ("--scratch", "--ready", "--go"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2 or args.warmup < 0:
        parser.error("--steps must be at least 2 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    from run import machine_info

    info = machine_info()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="seqtag-contention-") as folder:
        scratch = Path(folder)
        base_runs = scenario(args, scratch, policy="off", wait_policy="unset")
        base = summary(base_runs[0])
        rows.append({"scenario": "idle-today", "policy": "off", "wait_policy": "unset", **base})
        for name, policy, runs, neighbour in SCENARIOS:
            results = scenario(
                args,
                scratch,
                policy=policy,
                runs=runs,
                neighbour=neighbour,
                wait_policy=args.wait_policy,
            )
            each = [summary(r) for r in results]
            threads: Counter = Counter()
            for r in each:
                threads.update(r["threads"])
            row = {
                "scenario": name,
                "policy": policy,
                "wait_policy": args.wait_policy,
                "tokens_per_second": overlap_tokens_per_second(results)
                if runs > 1
                else each[0]["tokens_per_second"],
                "median_step_ms": statistics.mean(r["median_step_ms"] for r in each),
                "threads": dict(threads),
                "runs": each,
            }
            rows.append(row)
            print(f"{name} policy {policy}: {row['tokens_per_second']:,.0f} tokens/s", flush=True)
    for row in rows:
        ratio = base["tokens_per_second"] / row["tokens_per_second"]
        row["slowdown"] = ratio
        row["work"] = 1 / ratio
    info["load_average_end"] = list(os.getloadavg())
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": "training speed beside other busy processes (issue 17, item 3)",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "steps": args.steps,
        "warmup": args.warmup,
        "train_sentences": TRAIN_SENTENCES,
        "batch_size": BATCH_SIZE,
        "machine": info,
        "scenarios": rows,
    }
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("| scenario | policy | OMP wait | tokens/s | step ms | slowdown | work | threads |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for row in rows:
        threads = ", ".join(f"{k}: {v}" for k, v in sorted(row["threads"].items()))
        print(
            f"| {row['scenario']} | {row['policy']} | {row['wait_policy']} "
            f"| {row['tokens_per_second']:,.0f} | {row['median_step_ms']:.1f} "
            f"| {row['slowdown']:.2f}x | {row['work']:.2f} | {threads} |"
        )
    print(
        f"cores {info['usable_cores']}, torch {info['torch_version']}, load "
        f"{info['load_average'][0]:.2f} -> {info['load_average_end'][0]:.2f}; written to {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
