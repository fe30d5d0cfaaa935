"""Helpers of ``calibration.py`` and ``partial_labels.py``: seeded ``seqtag fit``/``test`` runs.

Each run is the ``seqtag`` command in a subprocess, as in ``quality.py`` (whose
:func:`~quality.last_metrics` reads the metrics back from the CSV log), so that every number
comes with the exact command that produced it. A config's corpus files are named in its
``data:`` section relative to the repository root; a run on a slice (``--max-train-sentences``,
``--max-eval-sentences``) trains on copies of the first sentences, written into the script's
work folder, never next to the corpora. CoNLL-2000 and CoNLL-2002 must not be copied into the
project (``../shared/data/README.md``), so the work folder is a temporary directory outside
the repository unless ``--work-dir`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from quality import last_metrics, seeded_run_options, seqtag_command
from run import cpu_model

REPO = Path(__file__).resolve().parents[1]

# -- configs and their files --------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    with open(REPO / path, encoding="utf-8") as stream:
        return yaml.safe_load(stream) or {}


def data_options(config: dict[str, Any]) -> dict[str, Any]:
    return dict(config.get("data") or {})


def repo_path(path: str | os.PathLike[str]) -> Path:
    """A config's path as the ``seqtag`` command run from the repository root reads it."""
    path = Path(path)
    return path if path.is_absolute() else REPO / path


def input_files(config: dict[str, Any]) -> list[Path]:
    data = data_options(config)
    keys = ("train_path", "val_path", "test_path", "vectors")
    return [repo_path(data[key]) for key in keys if data.get(key)]


def missing_inputs(script: str, configs: Iterable[str]) -> list[str]:
    """The corpus and vector files the configs name that do not exist, as printable lines."""
    missing = []
    for name in configs:
        if not repo_path(name).exists():
            missing.append(f"{name} (the config itself)")
            continue
        missing += [f"{p} (from {name})" for p in input_files(load_config(name)) if not p.exists()]
    if missing:
        print(
            f"benchmarks/{script} needs the configs' corpora and vectors (the shared ones under "
            f"{(REPO / '..' / 'shared' / 'data').resolve()}, see ../shared/data/README.md); "
            "missing:\n  " + "\n  ".join(missing),
            file=sys.stderr,
        )
    return missing


# -- sentences as raw lines ---------------------------------------------------------------------


def read_sentence_blocks(path: str | os.PathLike[str], fmt: str) -> list[list[str]]:
    """A corpus's sentences as lists of raw lines, one list per sentence seqtag reads.

    CoNLL-U: blocks between blank lines (comments kept). Columns: token lines; a blank line or
    a ``-DOCSTART-`` line ends a sentence, as in :func:`seqtag.data.io.formats.iter_columns`
    (``-DOCSTART-`` lines are dropped: blank lines between the sentences keep every boundary).
    """
    from seqtag.data.io.text_files import open_text

    if fmt not in ("conllu", "columns"):
        raise SystemExit(f"{path}: only conllu and columns corpora can be sliced, not {fmt}")
    blocks: list[list[str]] = []
    current: list[str] = []
    for _, line in open_text(path):
        stripped = line.strip()
        boundary = not stripped or (fmt == "columns" and stripped.split()[0] == "-DOCSTART-")
        if boundary:
            if current:
                blocks.append(current)
                current = []
            continue
        current.append(line)
    if current:
        blocks.append(current)
    return blocks


def write_sentence_blocks(blocks: Sequence[Sequence[str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as stream:
        for block in blocks:
            stream.write("\n".join(block) + "\n\n")
    return path


@dataclass
class CorpusView:
    """Which files a run trains, validates and tests on: the config's own, or slices of them.

    ``overrides`` are the ``--data.*`` options that point ``seqtag`` at the slices.
    """

    train_path: Path
    val_path: Path | None
    test_path: Path | None
    val_from_train: int
    overrides: list[str] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)

    def options(self, train_path: Path | None = None) -> list[str]:
        """The ``--data.*`` options of this view, with another training file if given."""
        options = list(self.overrides)
        if train_path is not None:
            if "--data.train_path" in options:
                at = options.index("--data.train_path")
                del options[at : at + 2]
            options += ["--data.train_path", str(train_path)]
        return options


def corpus_view(
    config: dict[str, Any],
    folder: Path,
    max_train: int | None,
    max_eval: int | None,
) -> CorpusView:
    """The config's files, or the first ``max_train`` training and ``max_eval`` dev/test
    sentences of them copied into ``folder``.

    With ``data.val_from_train: V`` (the last ``V`` training sentences are the dev set) the
    sliced training file is the first ``max_train`` sentences before those ``V`` followed by
    the first ``max_eval`` of them, and ``val_from_train`` shrinks to match.
    """
    data = data_options(config)
    fmt = data.get("format", "conllu")
    train = repo_path(data["train_path"])
    val = repo_path(data["val_path"]) if data.get("val_path") else None
    test = repo_path(data["test_path"]) if data.get("test_path") else None
    held_out = int(data.get("val_from_train") or 0)
    if max_train is None and max_eval is None:
        return CorpusView(train, val, test, held_out, [], {"sliced": False})
    overrides: list[str] = []
    blocks = read_sentence_blocks(train, fmt)
    train_part = blocks[:-held_out] if held_out else blocks
    dev_part = blocks[-held_out:] if held_out else []
    train_part = train_part[:max_train] if max_train is not None else train_part
    if held_out:
        dev_part = dev_part[:max_eval] if max_eval is not None else dev_part
        held_out = len(dev_part)
        overrides += ["--data.val_from_train", str(held_out)]
    suffix = ".conllu" if fmt == "conllu" else ".txt"
    train = write_sentence_blocks(train_part + dev_part, folder / f"train{suffix}")
    overrides += ["--data.train_path", str(train)]
    if max_eval is not None:
        if val is not None:
            dev = read_sentence_blocks(val, fmt)[:max_eval]
            val = write_sentence_blocks(dev, folder / f"dev{suffix}")
            overrides += ["--data.val_path", str(val)]
        if test is not None:
            test = write_sentence_blocks(
                read_sentence_blocks(test, fmt)[:max_eval], folder / f"test{suffix}"
            )
            overrides += ["--data.test_path", str(test)]
    description = {
        "sliced": True,
        "max_train_sentences": max_train,
        "max_eval_sentences": max_eval,
        "train_sentences": len(train_part),
        "val_from_train": held_out,
    }
    return CorpusView(train, val, test, held_out, overrides, description)


# -- running seqtag ----------------------------------------------------------------------------


class RunFailed(RuntimeError):
    pass


def command_line(command: Sequence[str]) -> str:
    """``seqtag ARGS`` as a shell line (the interpreter and ``-m`` left out, as quality.py does)."""
    return shlex.join(["seqtag", *command[len(seqtag_command()) :]])


def run_logged(command: Sequence[str], log: Path, threads: int) -> float:
    """Run ``command`` from the repository root, output to ``log``; its wall seconds."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as stream:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=stream, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise RunFailed(
            f"{command_line(command)}\nfailed with status {done.returncode}; the end of {log}:\n  "
            + "\n  ".join(tail)
        )
    return seconds


def fit_and_test(
    config: str,
    folder: Path,
    seed: int,
    threads: int,
    *,
    epochs: int | None,
    common: Sequence[str] = (),
    fit_only: Sequence[str] = (),
) -> dict[str, Any]:
    """``seqtag fit`` with ``--seed_everything seed`` into ``folder``, then ``seqtag test`` on the
    checkpoint the config's model selection kept (``best.ckpt``).

    ``common`` options go to both commands (data overrides), ``fit_only`` to the training run
    only (callbacks). Returns the test run's logged metrics, the commands and the timings.
    """
    shared = [*seeded_run_options(config, seed, folder), *common]
    best = folder / "checkpoints" / "best.ckpt"
    fit = [*seqtag_command(), "fit", *shared, "--trainer.logger.init_args.name", "fit"]
    if epochs is not None:
        fit += ["--trainer.max_epochs", str(epochs)]
    fit += list(fit_only)
    test = [*seqtag_command(), "test", *shared]
    test += ["--trainer.logger.init_args.name", "test", "--ckpt_path", str(best)]
    fit_seconds = run_logged(fit, folder / "fit.log", threads)
    test_seconds = run_logged(test, folder / "test.log", threads)
    trained = last_metrics(folder / "fit")
    epochs_run = int(trained.get("epoch", -1)) + 1
    return {
        "seed": seed,
        "test_metrics": last_metrics(folder / "test"),
        "best_checkpoint": str(best),
        "epochs_run": epochs_run,
        "fit_seconds": fit_seconds,
        "fit_seconds_per_epoch": fit_seconds / max(epochs_run, 1),
        "test_seconds": test_seconds,
        "threads": threads,
        "commands": [command_line(fit), command_line(test)],
    }


def checkpoint_temperature(path: str | os.PathLike[str]) -> float | None:
    """The tagger's temperature stored in a checkpoint (``None``: the checkpoint has none)."""
    import torch

    state = torch.load(path, weights_only=True, map_location="cpu").get("state_dict", {})
    for key, value in state.items():
        if key.endswith("temperature"):
            return float(value)
    return None


def run_all(jobs: int, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``function`` over ``items``, ``jobs`` at a time, in order; the first failure ends it."""
    if jobs <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(function, items))


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# -- options, summaries, records ------------------------------------------------------------------


def add_common_options(parser: argparse.ArgumentParser, default_output: str) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="training epochs (default: the config's)")
    parser.add_argument(
        "--max-train-sentences",
        "--slice",
        dest="max_train_sentences",
        type=int,
        help="train on the first N training sentences only (a quick check, not a result)",
    )
    parser.add_argument(
        "--max-eval-sentences",
        type=int,
        help="validate and test on the first N dev and test sentences only",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 300 training and 100 dev/test sentences, 1 epoch, 1 thread",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    parser.add_argument("--threads", type=int, help="threads per run (default: cores // jobs)")
    parser.add_argument("--out", "--output", dest="out", default=default_output, help="JSON file")
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="folder for derived corpora, checkpoints, logs and predictions (default: a new "
        "temporary folder outside the repository, deleted after a successful run)",
    )
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the temporary work folder afterwards"
    )


def finish_common_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.quick:
        args.max_train_sentences = args.max_train_sentences or 300
        args.max_eval_sentences = args.max_eval_sentences or 100
        args.epochs = args.epochs or 1
        args.threads = args.threads or 1
    for name in ("epochs", "max_train_sentences", "max_eval_sentences", "jobs", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct")
    args.threads = args.threads or max(1, usable_cores() // args.jobs)


def split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    """The script's own arguments, and those after ``--`` (options for every seqtag run)."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, []


def mean_sd(values: Sequence[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(present) if present else None,
        "sd": statistics.stdev(present) if len(present) > 1 else (0.0 if present else None),
        "values": list(values),
    }


def show(summary: dict[str, Any] | None, scale: float = 1.0, digits: int = 4) -> str:
    if not summary or summary["mean"] is None:
        return "n/a"
    return f"{scale * summary['mean']:.{digits}f} ± {scale * summary['sd']:.{digits}f}"


def environment(argv: Sequence[str]) -> dict[str, Any]:
    """The command line, date, versions and machine of this benchmark run."""
    import lightning
    import torch

    import seqtag

    try:
        revision = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        revision = ""
    return {
        "command": shlex.join(["python", *argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seqtag_version": seqtag.__version__,
        "git_revision": revision,
        "torch_version": torch.__version__,
        "lightning_version": lightning.__version__,
        "python_version": platform.python_version(),
        "machine": {
            "hostname": platform.node(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "usable_cores": usable_cores(),
            "cuda_available": torch.cuda.is_available(),
            "load_average": list(os.getloadavg()),
        },
    }


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def check_target(
    name: str, value: float | None, op: str, target: float, worst: float | None = None
) -> dict[str, Any]:
    """A done-when target against a measured mean: ``op`` is ``<=`` or ``>=``."""
    passed = None if value is None else (value <= target if op == "<=" else value >= target)
    return {
        "target": name,
        "op": op,
        "threshold": target,
        "measured": value,
        "worst_seed": worst,
        "pass": passed,
    }


def target_lines(targets: Sequence[dict[str, Any]], digits: int = 4) -> list[str]:
    lines = []
    for t in targets:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        measured = "n/a" if t["measured"] is None else f"{t['measured']:.{digits}f}"
        worst = "" if t["worst_seed"] is None else f" (worst seed {t['worst_seed']:.{digits}f})"
        lines.append(
            f"  {verdict}  {t['target']}: {measured}{worst}, target {t['op']} {t['threshold']:g}"
        )
    return lines


def make_work_folder(work_dir: Path | None, prefix: str) -> Path | None:
    """The folder for corpora, checkpoints and logs: a new temporary one, or ``work_dir`` if it
    holds no earlier runs (``None`` then, with the reason printed)."""
    work = Path(tempfile.mkdtemp(prefix=prefix)) if work_dir is None else work_dir
    if (work / "runs").exists() and any((work / "runs").iterdir()):
        print(f"{work / 'runs'} holds earlier runs: choose an empty --work-dir", file=sys.stderr)
        return None
    print(f"work folder: {work}", file=sys.stderr)
    return work


def print_commands_and_finish(
    labelled_runs: Iterable[tuple[str, dict[str, Any]]],
    record: dict[str, Any],
    args: argparse.Namespace,
    output: Path,
    work: Path,
) -> None:
    """Every run's commands, the versions and machine; then the work folder goes, if it was a
    temporary one and ``--keep-work`` was not given."""
    print("\nCommands:")
    for label, run in labelled_runs:
        for command in run["commands"]:
            print(f"  [{label} seed {run['seed']}] {command}")
    print(
        f"\nseqtag {record['seqtag_version']}, torch {record['torch_version']}, "
        f"{args.threads} thread(s) per run, {record['machine']['cpu_model']}; written to {output}"
    )
    if args.work_dir is None and not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
