"""Speed and memory benchmark of seqtag on UD English EWT UPOS (see benchmarks/README.md).

    python benchmarks/run.py [--quick] [--epochs 1] [--output benchmarks/results.json]

Runs every decoder variant (softmax, crf) in its own subprocess, so that peak resident memory
is per variant, and writes one JSON file plus a short table. ``--variant NAME`` runs one variant
in this process (what the parent invokes); it is not meant to be called by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The clock of "start-up" starts here, before torch, Lightning and seqtag are imported.
PROCESS_START = time.perf_counter()

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data"
VARIANTS = ("softmax", "crf")

FULL = {"train_sentences": None, "test_sentences": None, "hidden_size": 256}
QUICK = {"train_sentences": 500, "test_sentences": 200, "hidden_size": 64}
EMBEDDING_DIM = 100
BATCH_SIZE = 32
EVAL_BATCH_SIZE = 256


def data_paths(root: Path) -> dict[str, Path]:
    ewt = root / "ud_en_ewt"
    return {
        "train": ewt / "en_ewt-ud-train.conllu",
        "dev": ewt / "en_ewt-ud-dev.conllu",
        "test": ewt / "en_ewt-ud-test.conllu",
        "vectors": root / "embeddings" / "w2v-en-100d.bin",
    }


def lstm_forward_flops_per_token(input_dim: int, hidden: int) -> int:
    """FLOPs of one BiLSTM layer's forward pass per token, both directions.

    Per direction and token, the four gates are ``W_ih x + W_hh h``: ``4H * (D + H)``
    multiply-adds, i.e. ``2 * 4H * (D + H)`` FLOPs (the element-wise gate work, O(H), is left
    out). Two directions double it.
    """
    return 2 * (2 * 4 * hidden * (input_dim + hidden))


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``unknown`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_info() -> dict:
    import torch

    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_version": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "python_version": platform.python_version(),
        "load_average": list(os.getloadavg()),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_gflops(size: int = 1024, seconds: float = 1.0) -> float:
    """Best-of float32 ``torch.mm`` rate at the current thread count, in GFLOP/s."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    out = torch.empty(size, size)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


#: What a training process imports before it reads any data: the floor under its peak memory.
IMPORTS = (
    "import torch, torchmetrics, lightning.pytorch, seqtag.training.module, seqtag.data.datamodule"
)


def import_floor_mib(statement: str = IMPORTS) -> float:
    """Peak resident memory of a fresh interpreter that only runs ``statement``, in MiB.

    Peak memory during training is this floor plus what training itself holds; torchmetrics
    imports matplotlib whenever it is installed (about 70 MiB here), so the floor depends on
    the environment as much as on seqtag. The child reports ``VmHWM`` (its own address space):
    its ``ru_maxrss`` would include this process, which it was forked from.
    """
    report = "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    code = f"{statement}\n{report}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) / 1024


def matplotlib_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


# -- one variant, in this process --------------------------------------------------------------
def run_variant(variant: str, args: argparse.Namespace, scratch: Path) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    import lightning.pytorch as pl
    import torch
    from corpus_slice import head_sentences

    from seqtag import SequenceTagger, TaggingDataModule
    from seqtag.data.io.formats import read_conllu
    from seqtag.prediction.writer import PredictionWriter

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "seqtag"):
        logging.getLogger(name).setLevel(logging.ERROR)

    settings = QUICK if args.quick else FULL
    paths = data_paths(Path(args.data_root))
    train, test = paths["train"], paths["test"]
    train_sentences = settings["train_sentences"]
    if args.train_fraction < 1.0:
        total = train_sentences or len(read_conllu(train, tag_field="upos"))
        train_sentences = round(total * args.train_fraction)
    if train_sentences:
        train = head_sentences(train, scratch / "train.conllu", train_sentences)
    if settings["test_sentences"]:
        test = head_sentences(test, scratch / "test.conllu", settings["test_sentences"])

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.first_batch: float | None = None
            self.epochs: list[dict] = []
            self._start = 0.0
            self._real = self._padded = self._batches = 0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._real = self._padded = self._batches = 0
            self._start = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.first_batch is None:
                self.first_batch = time.perf_counter()
                self.rss_at_first_batch = peak_rss_mib()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._real += int(batch["lengths"].sum())
            self._padded += batch["words"].numel()
            self._batches += 1

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            seconds = time.perf_counter() - self._start
            self.epochs.append(
                {
                    "seconds": seconds,
                    "tokens": self._real,
                    "padded_tokens": self._padded,
                    "batches": self._batches,
                }
            )

    class PredictTimer(pl.Callback):
        seconds = 0.0

        def on_predict_epoch_start(self, trainer, pl_module) -> None:
            self._start = time.perf_counter()

        def on_predict_epoch_end(self, trainer, pl_module) -> None:
            self.seconds = time.perf_counter() - self._start

    # -- training ---------------------------------------------------------------------------
    # Start-up = corpora + vectors + vocabulary + model build + Lightning set-up, up to the
    # first training batch; measured from process start (imports included) and from here.
    run_start = time.perf_counter()
    pl.seed_everything(42, verbose=False)
    data = TaggingDataModule(
        train_path=str(train),
        val_path=str(paths["dev"]),
        test_path=str(test),
        format="conllu",
        tag_field="upos",
        batch_size=BATCH_SIZE,
        eval_batch_size=EVAL_BATCH_SIZE,
        vectors=str(paths["vectors"]),
    )
    model = SequenceTagger(
        rnn_type="lstm",
        hidden_size=settings["hidden_size"],
        num_layers=1,
        dropout=0.25,
        decoder=variant,
    )
    timer = Timer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=str(scratch),
    )
    trainer.fit(model, datamodule=data)
    peak_after_training = peak_rss_mib()
    epoch = timer.epochs[-1]
    sampler = trainer.train_dataloader.sampler
    threads = torch.get_num_threads()

    hidden = settings["hidden_size"]
    flops_token = lstm_forward_flops_per_token(EMBEDDING_DIM, hidden)
    train_flops = 3 * flops_token * epoch["tokens"]
    train_gflops = train_flops / epoch["seconds"] / 1e9

    # -- tagging: Python API ------------------------------------------------------------------
    test_sentences = [list(s.tokens) for s in data.sentences("test")]
    test_tokens = sum(len(s) for s in test_sentences)
    start = time.perf_counter()
    tagged = model.tag(test_sentences, batch_size=EVAL_BATCH_SIZE)
    tag_seconds = time.perf_counter() - start
    assert sum(len(t) for t in tagged) == test_tokens
    peak_after_tag = peak_rss_mib()

    # -- tagging: seqtag predict through a Trainer ------------------------------------------------
    predict_data = TaggingDataModule(
        predict_path=str(test), format="conllu", eval_batch_size=EVAL_BATCH_SIZE
    )
    predict_timer = PredictTimer()
    predictor = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[PredictionWriter(output=str(scratch / "tagged.conll")), predict_timer],
        default_root_dir=str(scratch),
    )
    predictor.predict(model, datamodule=predict_data, return_predictions=False)

    peak = matmul_peak_gflops()
    floor = import_floor_mib()
    return {
        "variant": variant,
        "train_fraction": args.train_fraction,
        "decoder": variant,
        "hidden_size": hidden,
        "embedding_dim": EMBEDDING_DIM,
        "batch_size": BATCH_SIZE,
        "eval_batch_size": EVAL_BATCH_SIZE,
        "epochs": args.epochs,
        "train_sentences": len(data.sentences("train")),
        "test_sentences": len(test_sentences),
        "torch_num_threads": threads,
        "train_epoch_seconds": epoch["seconds"],
        "train_epoch_tokens": epoch["tokens"],
        "train_epoch_batches": epoch["batches"],
        "train_tokens_per_second": epoch["tokens"] / epoch["seconds"],
        "startup_seconds": timer.first_batch - run_start,
        "startup_seconds_from_process_start": timer.first_batch - PROCESS_START,
        "tag_api_tokens": test_tokens,
        "tag_api_seconds": tag_seconds,
        "tag_api_tokens_per_second": test_tokens / tag_seconds,
        "predict_tokens": test_tokens,
        "predict_seconds": predict_timer.seconds,
        "predict_tokens_per_second": test_tokens / predict_timer.seconds,
        "peak_rss_mib": peak_rss_mib(),
        "import_floor_rss_mib": floor,
        "peak_rss_mib_training_above_imports": peak_after_training - floor,
        "matplotlib_installed": matplotlib_installed(),
        "peak_rss_mib_at_first_batch": timer.rss_at_first_batch,
        "peak_rss_mib_after_training": peak_after_training,
        "peak_rss_mib_after_tag": peak_after_tag,
        "padding_efficiency_sampler": sampler.padding_efficiency(),
        "padding_efficiency_measured": epoch["tokens"] / epoch["padded_tokens"],
        "lstm_forward_flops_per_token": flops_token,
        "lstm_train_gflops_per_second": train_gflops,
        "lstm_train_gflops_per_second_padded": 3
        * flops_token
        * epoch["padded_tokens"]
        / epoch["seconds"]
        / 1e9,
        "matmul_peak_gflops_per_second": peak,
        "lstm_fraction_of_matmul_peak": train_gflops / peak,
        "all_epochs": timer.epochs,
        "load_average_after": list(os.getloadavg()),
    }


# -- parent ----------------------------------------------------------------------------------
TABLE = [
    ("train tokens/s", "train_tokens_per_second", "{:,.0f}"),
    ("start-up s (run)", "startup_seconds", "{:.1f}"),
    ("start-up s (process)", "startup_seconds_from_process_start", "{:.1f}"),
    ("tag() tokens/s", "tag_api_tokens_per_second", "{:,.0f}"),
    ("predict tokens/s", "predict_tokens_per_second", "{:,.0f}"),
    ("peak RSS MiB, first batch", "peak_rss_mib_at_first_batch", "{:,.0f}"),
    ("peak RSS MiB, training", "peak_rss_mib_after_training", "{:,.0f}"),
    ("peak RSS MiB, + tag()", "peak_rss_mib_after_tag", "{:,.0f}"),
    ("peak RSS MiB, + predict", "peak_rss_mib", "{:,.0f}"),
    ("RSS MiB of the imports alone", "import_floor_rss_mib", "{:,.0f}"),
    ("training peak above imports", "peak_rss_mib_training_above_imports", "{:,.0f}"),
    ("padding eff. (sampler)", "padding_efficiency_sampler", "{:.3f}"),
    ("padding eff. (measured)", "padding_efficiency_measured", "{:.3f}"),
    ("LSTM train GFLOP/s", "lstm_train_gflops_per_second", "{:.1f}"),
    ("matmul peak GFLOP/s", "matmul_peak_gflops_per_second", "{:.1f}"),
    ("LSTM / peak", "lstm_fraction_of_matmul_peak", "{:.1%}"),
]


def format_table(variants: dict[str, dict]) -> str:
    names = list(variants)
    rows = [["", *names]]
    for label, key, fmt in TABLE:
        rows.append([label, *(fmt.format(variants[n][key]) for n in names)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small slice, hidden 64 (smoke run)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs; the last is timed")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results.json"))
    parser.add_argument("--data-root", default=str(DEFAULT_DATA), help="the shared data folder")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="instead: one softmax epoch on 25%%, 50%% and 100%% of the training set",
    )
    parser.add_argument("--train-fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--variant-output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def run_in_subprocess(variant: str, args: argparse.Namespace) -> dict | None:
    """Run one variant in a fresh Python process; its results, or None if it failed."""
    with tempfile.TemporaryDirectory(prefix="seqtag-bench-") as scratch:
        result_file = Path(scratch) / f"{variant}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--variant", variant]
        command += ["--variant-output", str(result_file)]
        command += ["--epochs", str(args.epochs), "--data-root", str(args.data_root)]
        command += ["--train-fraction", str(args.train_fraction)]
        if args.quick:
            command.append("--quick")
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            print(f"variant {variant} failed (exit {done.returncode})", file=sys.stderr)
            return None
        return json.loads(result_file.read_text(encoding="utf-8"))


SCALING_FRACTIONS = (0.25, 0.5, 1.0)


def run_scaling(args: argparse.Namespace) -> int:
    """Training cost against corpus size: time should grow linearly, memory stay flat."""
    info = machine_info()
    rows = {}
    for fraction in SCALING_FRACTIONS:
        print(f"running softmax on {fraction:.0%} of the training set ...", file=sys.stderr)
        args.train_fraction = fraction
        result = run_in_subprocess("softmax", args)
        if result is None:
            return 1
        rows[f"{fraction:g}"] = {
            "train_fraction": fraction,
            "train_epoch_tokens": result["train_epoch_tokens"],
            "train_epoch_seconds": result["train_epoch_seconds"],
            "microseconds_per_token": 1e6
            * result["train_epoch_seconds"]
            / result["train_epoch_tokens"],
            "peak_rss_mib_after_training": result["peak_rss_mib_after_training"],
            "peak_rss_mib_at_first_batch": result["peak_rss_mib_at_first_batch"],
        }
    info["load_average_end"] = list(os.getloadavg())
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": "training cost vs corpus size, EWT UPOS, softmax, batch 32",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": info,
        "scaling": rows,
    }
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    full = rows["1"]
    print("| training set | tokens | epoch s | us/token | ratio to 100% | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, row in rows.items():
        print(
            f"| {float(key):.0%} | {row['train_epoch_tokens']:,} | "
            f"{row['train_epoch_seconds']:.1f} | {row['microseconds_per_token']:.1f} | "
            f"{row['microseconds_per_token'] / full['microseconds_per_token']:.2f} | "
            f"{row['peak_rss_mib_after_training']:,.0f} |"
        )
    print(f"written to {output}")
    return 0


def report_missing_data(script: str, root: Path) -> bool:
    """Print which shared files ``script`` needs and lacks under ``root``; whether any are."""
    missing = [str(p) for p in data_paths(root).values() if not p.exists()]
    if missing:
        print(
            f"benchmarks/{script} needs UD English EWT and the 100-d vectors under "
            f"{root.resolve()} (see ../shared/data/README.md); missing:\n  " + "\n  ".join(missing),
            file=sys.stderr,
        )
    return bool(missing)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if report_missing_data("run.py", Path(args.data_root)):
        return 2
    if args.variant:
        with tempfile.TemporaryDirectory(prefix="seqtag-bench-") as scratch:
            result = run_variant(args.variant, args, Path(scratch))
        Path(args.variant_output).write_text(json.dumps(result), encoding="utf-8")
        return 0

    if args.scaling:
        return run_scaling(args)
    info = machine_info()
    variants = {}
    for variant in args.variants:
        print(f"running {variant} ...", file=sys.stderr, flush=True)
        result = run_in_subprocess(variant, args)
        if result is None:
            return 1
        variants[variant] = result
    info["load_average_end"] = list(os.getloadavg())
    results = {
        "benchmark": "UD English EWT UPOS, BiLSTM 1 layer, 100-d word2vec, batch 32",
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": info,
        "variants": variants,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(format_table(variants))
    print(
        f"threads {info['torch_num_threads']}, torch {info['torch_version']}, {info['cpu_model']}, "
        f"load {info['load_average'][0]:.2f} -> {info['load_average_end'][0]:.2f}; "
        f"written to {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
