"""Training at corpus scale (issue 26): memory, start-up and speed of ``seqtag fit`` on EWT x N.

    python benchmarks/training_scale.py [--sizes 1,16,64] [--steps 40] [--modes memory,cache]
        [--ddp | --no-ddp] [--out benchmarks/training_scale.json] [--quick] [--gzip]

Writes UD English EWT's training file (``../shared/data/ud_en_ewt``, ``--data-root``) repeated
1, 16 and 64 times (x64: 13M tokens, about 0.9 GB) into a temporary folder, streaming, then runs
``seqtag fit --config configs/ud_ewt_upos.yaml`` on each, as the command a user types, with the
training file replaced, no dev set (``--data.val_path=null``, no calibration), ``--steps``
training steps, its outputs in its own run folder and ``SEQTAG_CACHE_DIR`` in a folder of this
benchmark (a fresh, empty one for every size, mode and process count). Modes:

- ``memory``: today's path (the corpus read and encoded into memory), one run;
- ``cache``: the same with :data:`CORPUS_CACHE_OPTION` (the memory-mapped corpus cache), run
  twice: ``cold`` (empty cache folder) and ``warm`` (the cache the first run left).

With ``--ddp`` (the default) every run is repeated with 2 CPU processes (``--trainer.devices 2
--trainer.strategy ddp --trainer.accelerator cpu``). Measured per run, from outside the
process (``benchmarks/process_memory.py``, every 0.2 s): wall time; the peak resident memory of
each process (``VmHWM``; one process's exactly, from ``wait4``); the peak over time of the
processes' summed proportional memory (``Pss`` of ``/proc/PID/smaps_rollup``, so pages shared
through the page cache count once). From inside (``benchmarks/training_probe.py``, a callback
given on the command line): start-up (launch to the first training step) and tokens/s over
the steps after the first. Torch's thread policy is off (``--threads.enabled=false``), so the
thread count is torch's default (``OMP_NUM_THREADS`` if set) and the same in every run.

Only the steps run, not epochs: the rate is the steady training rate, not an epoch's. Run it
alone on the machine: memory and speed of other processes change the numbers. Do not run the
full benchmark from tests; ``--quick`` (x1, a few steps) is the smoke run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from process_memory import run_sampled  # noqa: E402
from run import DEFAULT_DATA, machine_info  # noqa: E402

#: The option that turns the memory-mapped corpus cache on (issue 26); change it here only.
CORPUS_CACHE_OPTION = "--data.corpus_cache=true"
CONFIG = "configs/ud_ewt_upos.yaml"
TRAIN_FILE = ("ud_en_ewt", "en_ewt-ud-train.conllu")
DDP_OPTIONS = ("--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu")
DEFAULT_SIZES = (1, 16, 64)
DEFAULT_STEPS = 40
QUICK_STEPS = 5
MODES = ("memory", "cache")
MIB = 1024.0


# -- the corpora ---------------------------------------------------------------------------------
def source_corpus(root: Path) -> Path | None:
    """EWT's training file under ``root``, plain or gzipped, or ``None``."""
    plain = root.joinpath(*TRAIN_FILE)
    for candidate in (plain, plain.with_name(plain.name + ".gz")):
        if candidate.exists():
            return candidate
    return None


def read_bytes(path: Path) -> bytes:
    """A corpus file's bytes (gzip undone), ending in one blank line, so copies stay apart."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.rstrip(b"\n") + b"\n\n"


def count_tokens(data: bytes) -> int:
    """Word lines of a CoNLL-U text (an integer ID: no multiword ranges, no empty nodes)."""
    return sum(1 for line in data.split(b"\n") if line.split(b"\t", 1)[0].isdigit())


def write_corpus(data: bytes, target: Path, copies: int, compress: bool) -> Path:
    """``data`` written ``copies`` times, one copy at a time (x64 is never held in memory)."""
    target = target.with_name(target.name + ".gz") if compress else target
    with gzip.open(target, "wb", 1) if compress else open(target, "wb") as stream:
        for _ in range(copies):
            stream.write(data)
    return target


# -- one run -------------------------------------------------------------------------------------
def fit_command(corpus: Path, folder: Path, steps: int, mode: str, ddp: bool) -> list[str]:
    """The ``seqtag fit`` command of one run, with the probe callback appended."""
    probe_folder = str(folder / "probe")
    probe = {"class_path": "training_probe.TrainingProbe", "init_args": {"folder": probe_folder}}
    command = [sys.executable, "-m", "seqtag", "fit", "--config", CONFIG]
    command += [
        f"--data.train_path={corpus}",
        "--data.val_path=null",
        "--trainer.limit_val_batches=0",
        "--calibration.enabled=false",
        "--threads.enabled=false",
        f"--trainer.max_steps={steps}",
        f"--trainer.default_root_dir={folder}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--checkpoint.dirpath={folder / 'checkpoints'}",
        f"--trainer.callbacks+={json.dumps(probe)}",
    ]
    if mode == "cache":
        command.append(CORPUS_CACHE_OPTION)
    return command + (list(DDP_OPTIONS) if ddp else [])


def measure(corpus: Path, folder: Path, cache: Path, steps: int, mode: str, ddp: bool) -> dict:
    """One ``seqtag fit`` run in ``folder`` with ``cache`` as its cache: every number of a row."""
    folder.mkdir(parents=True)
    command = fit_command(corpus, folder, steps, mode, ddp)
    env = dict(os.environ, SEQTAG_CACHE_DIR=str(cache))
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / "benchmarks"), env.get("PYTHONPATH")])
    )
    sampled = run_sampled(command, env, folder / "output.log", cwd=REPO)
    row: dict[str, Any] = {"command": shlex.join(command), "returncode": sampled["returncode"]}
    row["wall_s"] = sampled["wall_s"]
    ranks = [json.loads(p.read_text()) for p in sorted((folder / "probe").glob("rank-*.json"))]
    if sampled["returncode"] != 0 or not ranks or any("train_end" not in r for r in ranks):
        lines = (folder / "output.log").read_text(errors="replace").strip().splitlines()
        row["error"] = lines[-1] if lines else f"exit status {sampled['returncode']}, no output"
        row["output_tail"] = lines[-30:]
        return row
    start = sampled["start"]
    tokens = sum(r["tokens"] - r["first_batch_tokens"] for r in ranks)
    seconds = max(r["last_batch_end"] for r in ranks) - min(r["first_batch_end"] for r in ranks)
    by_pid = {r["pid"]: r for r in ranks}
    peaks = sampled["peak_rss_kib"]
    for pid, rank in by_pid.items():  # the rank's own reading at the end may be the later one
        peaks[pid] = max(peaks.get(pid, 0), rank.get("peak_rss_kib") or 0)
    if len(peaks) <= 1:  # one process: wait4's number is exactly its peak
        peaks = {sampled["launcher_pid"]: sampled["max_rss_kib"]}
    # A DDP rank the launcher does not wait for is missing from wait4's number: take the largest.
    largest = max([sampled["max_rss_kib"], *peaks.values()])
    row.update(
        processes=len(ranks),
        startup_s=round(max(r["first_batch_start"] for r in ranks) - start, 2),
        steps=ranks[0]["steps"],
        trained_tokens=sum(r["tokens"] for r in ranks),
        tokens_per_s=round(tokens / seconds) if seconds > 0 else None,
        peak_rss_mib=[round(kib / MIB, 1) for kib in peaks.values()],
        peak_rss_mib_max=round(largest / MIB, 1),
        summed_pss_peak_mib=round(sampled["summed_pss_peak_kib"] / MIB, 1),
        torch_threads=[r["torch_threads"] for r in ranks],
        peak_rss_mib_at_first_step=[
            round(r["peak_rss_kib_at_first_batch"] / MIB, 1) for r in ranks
        ],
    )
    return row


# -- the whole benchmark -------------------------------------------------------------------------
def plan(sizes: list[int], modes: list[str], ddp: bool) -> list[tuple[int, str, bool, str]]:
    """(size, mode, ddp, phase) in run order; a cache mode's ``warm`` run follows its ``cold``."""
    runs = []
    for size in sizes:
        for mode in modes:
            for parallel in (False, True) if ddp else (False,):
                phases = ("cold", "warm") if mode == "cache" else ("",)
                runs += [(size, mode, parallel, phase) for phase in phases]
    return runs


def label(size: int, mode: str, ddp: bool, phase: str) -> str:
    return f"x{size}-{mode}{'-ddp' if ddp else ''}{'-' + phase if phase else ''}"


def targets(rows: list[dict]) -> dict[str, Any]:
    """Issue 26's targets, for whichever of the rows they need this run has."""
    found = {(r["size"], r["mode"], r["ddp"], r["phase"]): r for r in rows if "error" not in r}

    def value(size: int, mode: str, ddp: bool, phase: str, key: str) -> Any:
        return found.get((size, mode, ddp, phase), {}).get(key)

    out: dict[str, Any] = {}
    for size in sorted({row["size"] for row in rows}):
        for phase in ("cold", "warm"):
            one = value(size, "cache", False, phase, "peak_rss_mib_max")
            x1 = value(1, "cache", False, phase, "peak_rss_mib_max")
            if size > 1 and one and x1:  # x N within 1.2 x the x1 peak + 100 MiB
                limit = round(1.2 * x1 + 100, 1)
                out[f"x{size}_{phase}_peak_rss_mib"] = {"value": one, "limit": limit}
            alone = value(size, "cache", False, phase, "summed_pss_peak_mib")
            two = value(size, "cache", True, phase, "summed_pss_peak_mib")
            if alone and two:  # 2 DDP processes together within 1.3 x one process (PSS both)
                out[f"x{size}_{phase}_ddp_summed_pss_mib"] = {"value": two, "limit": 1.3 * alone}
        warm = value(size, "cache", False, "warm", "startup_s")
        if warm is not None and size == 64:
            out["x64_warm_startup_s"] = {"value": warm, "limit": 10.0}
        new = value(size, "cache", False, "warm", "tokens_per_s")
        old = value(size, "memory", False, "", "tokens_per_s")
        if new and old:  # within 5% of today's in-memory path
            out[f"x{size}_warm_tokens_per_s"] = {"value": new, "at_least": round(0.95 * old)}
    for check in out.values():
        if "limit" in check:
            check["limit"] = round(check["limit"], 1)
            check["met"] = check["value"] <= check["limit"]
        else:
            check["met"] = check["value"] >= check["at_least"]
    return out


def format_table(rows: list[dict]) -> str:
    lines = [
        "| run | tokens | wall s | start-up s | tokens/s | peak RSS MiB (each) | summed PSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(
                f"| {row['run']} | {row['corpus_tokens']:,} | failed: {row['error'][:100]} |"
            )
            continue
        rss = " + ".join(f"{value:,.0f}" for value in row["peak_rss_mib"])
        lines.append(
            f"| {row['run']} | {row['corpus_tokens']:,} | {row['wall_s']:.1f} | "
            f"{row['startup_s']:.1f} | {row['tokens_per_s'] or 0:,} | {rss} | "
            f"{row['summed_pss_peak_mib']:,.0f} |"
        )
    return "\n".join(lines)


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        message = f"expected numbers separated by commas, got {text!r}"
        raise argparse.ArgumentTypeError(message) from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def mode_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [value for value in values if value not in MODES]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}; got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int_list, help="copies of EWT train (default 1,16,64)")
    parser.add_argument("--steps", type=int, help=f"training steps a run (default {DEFAULT_STEPS})")
    parser.add_argument("--modes", type=mode_list, default=list(MODES), help="memory,cache")
    parser.add_argument(
        "--ddp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also every run with 2 CPU processes (default on)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "training_scale.json")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: x1 only, {QUICK_STEPS} steps (unless given)",
    )
    parser.add_argument("--gzip", action="store_true", help="write the corpora as .conllu.gz")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work-dir", type=Path, help="keep corpora, runs and caches here")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is left out of tokens/s)")
    args.sizes = args.sizes or ([1] if args.quick else list(DEFAULT_SIZES))
    args.steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    return args


def benchmark(args: argparse.Namespace, source: Path, work: Path) -> dict[str, Any]:
    data = read_bytes(source)
    tokens = count_tokens(data)
    corpora = {}
    for size in args.sizes:
        target = work / "corpora" / f"ewt_train_x{size}.conllu"
        target.parent.mkdir(parents=True, exist_ok=True)
        corpora[size] = write_corpus(data, target, size, args.gzip)
    rows = []
    for size, mode, ddp, phase in plan(args.sizes, args.modes, args.ddp):
        name = label(size, mode, ddp, phase)
        cache = work / "cache" / label(size, mode, ddp, "")  # cold and warm share theirs
        print(f"running {name} ...", file=sys.stderr, flush=True)
        row = {"run": name, "size": size, "mode": mode, "ddp": ddp, "phase": phase}
        row.update(corpus_tokens=tokens * size, corpus_bytes=corpora[size].stat().st_size)
        row.update(measure(corpora[size], work / "runs" / name, cache, args.steps, mode, ddp))
        print(
            f"  {json.dumps({k: v for k, v in row.items() if k != 'output_tail'})}",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    return {"tokens_x1": tokens, "runs": rows, "targets": targets(rows)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = source_corpus(args.data_root)
    if source is None:
        print(
            f"benchmarks/training_scale.py needs UD English EWT's training file under "
            f"{args.data_root.resolve()} (see ../shared/data/README.md); missing:\n  "
            f"{args.data_root.joinpath(*TRAIN_FILE)}",
            file=sys.stderr,
        )
        return 2
    info = machine_info()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        measured = benchmark(args, source, args.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="seqtag-training-scale-") as scratch:
            measured = benchmark(args, source, Path(scratch))
    info["load_average_end"] = list(os.getloadavg())
    results = {
        "benchmark": "seqtag fit on UD English EWT train x N (issue 26)",
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv),
        "date": started,
        "config": CONFIG,
        "source": str(source),
        "steps": args.steps,
        "sizes": args.sizes,
        "modes": args.modes,
        "ddp": args.ddp,
        "corpus_cache_option": CORPUS_CACHE_OPTION,
        "machine": info,
        **measured,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(format_table(measured["runs"]))
    for name, check in measured["targets"].items():
        print(f"target {name}: {check}")
    print(
        f"{args.steps} steps a run; torch threads here {info['torch_num_threads']}, "
        f"load {info['load_average'][0]:.2f} -> {info['load_average_end'][0]:.2f}; "
        f"written to {args.out}"
    )
    return 1 if any("error" in row for row in measured["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
