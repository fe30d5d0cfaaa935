"""Test scores over several seeds: ``seqtag fit`` then ``seqtag test`` per seed, mean and std.

    python benchmarks/quality.py configs/ud_ewt_upos_chars.yaml --seeds 1 2 3 --jobs 2
    python benchmarks/quality.py configs/ud_ewt_upos_shared.yaml --name ewt_crf \\
        -- --model.init_args.decoder crf      # after --: options for every seqtag run

Each seed trains with ``--seed_everything SEED`` into ``runs/quality/NAME/seedSEED`` and is
tested on the checkpoint that the config's model selection kept (``best.ckpt``). The score is
``test_f1`` for span tasks and ``test_acc`` otherwise, read from the test run's CSV log. Seeds
run ``--jobs`` at a time, each process with ``usable cores // jobs`` threads (two 1-thread
processes use 2 cores better than one 2-thread process); ``--threads 1`` when other work
shares the machine, since oversubscribed cores slow an RNN down several times. Results go to
``benchmarks/quality/NAME.json`` with every seed's score, wall time and the exact commands.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def seqtag_command() -> list[str]:
    return [sys.executable, "-m", "seqtag"]


def last_metrics(log_dir: Path) -> dict[str, float]:
    """The metrics of a CSVLogger folder's last version, merged over its rows."""
    versions = sorted(log_dir.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not versions:
        raise FileNotFoundError(f"no CSV log under {log_dir}")
    merged: dict[str, float] = {}
    with open(versions[-1] / "metrics.csv", newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            merged.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return merged


def seeded_run_options(config: str, seed: int, folder: Path) -> list[str]:
    """The options ``seqtag fit`` and ``seqtag test`` share in one seeded run kept in ``folder``:
    the config, the seed, and every output (logs, checkpoints) inside ``folder``."""
    return [
        "--config",
        config,
        "--seed_everything",
        str(seed),
        "--trainer.default_root_dir",
        str(folder),
        "--trainer.logger.init_args.save_dir",
        str(folder),
        "--checkpoint.dirpath",
        str(folder / "checkpoints"),
        "--trainer.enable_progress_bar",
        "false",
    ]


def run_seed(config: str, runs: Path, name: str, seed: int, threads: int, extra: list[str]) -> dict:
    folder = runs / name / f"seed{seed}"
    common = [*seeded_run_options(config, seed, folder), *extra]
    fit = [*seqtag_command(), "fit", *common, "--trainer.logger.init_args.name", "fit"]
    test = [
        *seqtag_command(),
        "test",
        *common,
        "--trainer.logger.init_args.name",
        "test",
        "--ckpt_path",
        str(folder / "checkpoints" / "best.ckpt"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    folder.mkdir(parents=True, exist_ok=True)
    timings = {}
    for stage, command in (("fit", fit), ("test", test)):
        start = time.perf_counter()
        with open(folder / f"{stage}.log", "w", encoding="utf-8") as log:
            done = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        timings[stage] = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"seed {seed}: seqtag {stage} failed, see {folder / stage}.log")
    metrics = last_metrics(folder / "test")
    metric = "test_f1" if "test_f1" in metrics else "test_acc"
    return {
        "seed": seed,
        "metric": metric,
        "score": metrics[metric],
        "test_metrics": metrics,
        "fit_seconds": timings["fit"],
        "test_seconds": timings["test"],
        "threads": threads,
        "commands": [" ".join(fit[2:]), " ".join(test[2:])],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a seqtag config, e.g. configs/ud_ewt_upos_chars.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at the same time")
    parser.add_argument("--threads", type=int, help="threads per run (default: cores // jobs)")
    parser.add_argument("--name", help="results name (default: the config's file name)")
    parser.add_argument("--output", help="JSON file (default benchmarks/quality/NAME.json)")
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=REPO / "runs" / "quality",
        help="where each seed's run goes (NAME/seedSEED); seqtag fit refuses to overwrite an "
        "earlier run there, so rerun with another --name or --runs-dir",
    )
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.extra = extra
    name = args.name or Path(args.config).stem
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or max(1, (cores or 1) // args.jobs)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(
            pool.map(
                lambda s: run_seed(args.config, args.runs_dir, name, s, threads, args.extra),
                args.seeds,
            )
        )
    scores = [run["score"] for run in runs]
    summary = {
        "config": args.config,
        "extra": args.extra,
        "name": name,
        "metric": runs[0]["metric"],
        "mean": statistics.fmean(scores),
        "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        "scores": scores,
        "seeds": args.seeds,
        "runs": runs,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    output = Path(args.output) if args.output else REPO / "benchmarks" / "quality" / f"{name}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    percent = [f"{100 * s:.2f}" for s in scores]
    print(
        f"{name}: {summary['metric']} {100 * summary['mean']:.2f} ± {100 * summary['std']:.2f} "
        f"over seeds {args.seeds} ({', '.join(percent)}); written to {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
