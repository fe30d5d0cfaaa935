"""How long until a good tagger exists: accuracy against wall time, seqtag's recipe and spaCy's.

    python benchmarks/time_to_accuracy.py [--config configs/ud_ewt_upos.yaml] [--seed 42] \\
        [--variant NAME='--seqtag-fit --overrides'] [--spacy /work/spacyenv/bin/python] \\
        [--spacy-json benchmarks/quality/spacy_ewt_upos.json]

Each variant is one ordinary ``seqtag fit --config C --seed_everything S`` process (the run
folder in a temporary directory) with ``epoch_clock.EpochClock`` added as a callback: at the end
of every epoch it stamps the wall clock, the epoch's dev accuracy, and the test accuracy of that
epoch's weights (scored by ``tag()``, whose own time is subtracted from every stamp). The default
variant is the config as it is; ``--variant`` adds others (say the old recipe, as overrides).
Times are counted from just before the process is started, so imports, reading the corpus and
the vectors, and validation are all inside them; ``train_start`` says where training began.

"The model you have at time t" is what ``best.ckpt`` holds then: the epoch with the best dev
accuracy so far. The report gives, per variant, when its test accuracy first reached
``--target`` (default 95.0%) and spaCy's final test accuracy.

With ``--spacy PYTHON`` (the spaCy environment of ``spacy_baseline.py``, already ``prepare``d)
the same script runs ``spacy_baseline.py train`` right after, which stamps each row of spaCy's
training table with the seconds since its process started; spaCy's clock is read the same way
(its ``model-best`` at a time is the best dev row so far; its test accuracy is only known for the
final ``model-best``). ``--spacy-json`` reads a result of an earlier such run instead.

Prints a table and writes ``benchmarks/time_to_accuracy.json`` (exits with status 2 and the
missing files when the config or EWT's test file in ``data/`` is absent). Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from quality import seeded_run_options  # noqa: E402
from quality import seqtag_command as quality_command  # noqa: E402
from run import machine_info  # noqa: E402

TEST_PATH = REPO / "data" / "ud_en_ewt" / "en_ewt-ud-test.conllu.gz"
SPACY_JSON = REPO / "benchmarks" / "quality" / "spacy_ewt_upos.json"


def seqtag_command(config: Path, seed: int, folder: Path, extra: list[str]) -> list[str]:
    """``seqtag fit`` with its run folder in ``folder`` (as ``quality.py`` runs a seed) and the
    epoch clock added."""
    clock = {
        "class_path": "epoch_clock.EpochClock",
        "init_args": {"report": str(folder / "clock.json"), "test_path": str(TEST_PATH)},
    }
    return [
        *quality_command(),
        "fit",
        *seeded_run_options(str(config), seed, folder),
        f"--trainer.callbacks+={json.dumps(clock)}",
        *extra,
    ]


def run_variant(name: str, config: Path, seed: int, extra: list[str]) -> dict[str, Any]:
    """Train one variant and return its epochs, stamped from the process start."""
    with tempfile.TemporaryDirectory(prefix=f"tta-{name}-") as tmp:
        folder = Path(tmp)
        command = seqtag_command(config, seed, folder, extra)
        print("$", shlex.join(command), flush=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(REPO)])}
        started = time.time()
        completed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
        finished = time.time()
        if completed.returncode:
            sys.stderr.write(completed.stderr[-4000:])
            sys.exit(f"variant {name} failed with exit status {completed.returncode}")
        clock = json.loads((folder / "clock.json").read_text(encoding="utf-8"))
    epochs = [
        {
            "epoch": row["epoch"],
            "seconds": round(row["end"] - started, 2),
            "val_acc": row["val_acc"],
            "test_acc": row["test_acc"],
        }
        for row in clock["epochs"]
    ]
    best_val = -1.0
    best_test = None
    for row in epochs:  # what best.ckpt holds at the end of each epoch
        if row["val_acc"] is not None and row["val_acc"] > best_val:
            best_val, best_test = row["val_acc"], row["test_acc"]
        row["best_ckpt_test_acc"] = best_test
    return {
        "name": name,
        "command": shlex.join(["seqtag", *command[3:]]),
        "train_start_seconds": round(clock["train_start"] - started, 2),
        "process_seconds": round(finished - started, 2),
        "epochs": epochs,
    }


def first_time_at(epochs: list[dict[str, Any]], accuracy: float) -> float | None:
    """Seconds until the best-by-dev checkpoint's test accuracy first reached ``accuracy``."""
    for row in epochs:
        if row["best_ckpt_test_acc"] is not None and row["best_ckpt_test_acc"] >= accuracy:
            return row["seconds"]
    return None


def run_spacy(python: Path, output: Path) -> dict[str, Any]:
    """spaCy's efficiency tagger trained by ``spacy_baseline.py train``; its result JSON."""
    command = [str(python), str(REPO / "benchmarks" / "spacy_baseline.py"), "train"]
    command += ["--json", str(output)]
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO, capture_output=True)
    return json.loads(output.read_text(encoding="utf-8"))


def spacy_summary(result: dict[str, Any]) -> dict[str, Any]:
    """spaCy's curve as (seconds, dev accuracy), its training time and final test accuracy."""
    training = result["training"]
    curve = [
        {"seconds": row.get("seconds"), "step": row["step"], "dev_acc": row["dev_tag_acc"]}
        for row in training["dev_curve"]
    ]
    return {
        "test_accuracy": result["test_accuracy"],
        "training_seconds": round(training["wall_seconds"], 1),
        "best_dev": training["best_dev"],
        "dev_curve": curve,
        "command": result["commands"][-2],
    }


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME='--overrides', got {text!r}")
    return name, shlex.split(overrides)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "ud_ewt_upos.yaml")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variant", type=parse_variant, action="append", default=[])
    parser.add_argument("--no-default", action="store_true", help="only the --variant runs")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--spacy", type=Path, help="python of spaCy's venv: train it too")
    parser.add_argument("--spacy-json", type=Path, help="an earlier spacy_baseline.py result")
    default_output = REPO / "benchmarks" / "time_to_accuracy.json"
    parser.add_argument("--output", type=Path, default=default_output)
    args = parser.parse_args()
    missing = [path for path in (TEST_PATH, args.config) if not path.exists()]
    if missing:
        print("time_to_accuracy.py needs:", *map(str, missing), sep="\n  ", file=sys.stderr)
        return 2
    variants = ([] if args.no_default else [("default", [])]) + args.variant
    result: dict[str, Any] = {
        "date": date.today().isoformat(),
        "command": shlex.join(["python", *sys.argv]),
        "machine": machine_info(),
        "config": str(args.config.resolve().relative_to(REPO)),
        "seed": args.seed,
        "target": args.target,
        "variants": [run_variant(name, args.config, args.seed, extra) for name, extra in variants],
    }
    spacy = None
    if args.spacy:
        spacy_json = args.output.with_name("time_to_accuracy_spacy.json")
        spacy = spacy_summary(run_spacy(args.spacy, spacy_json))
    elif args.spacy_json:
        spacy = spacy_summary(json.loads(args.spacy_json.read_text(encoding="utf-8")))
    result["spacy"] = spacy
    for variant in result["variants"]:
        variant["seconds_to_target"] = first_time_at(variant["epochs"], args.target)
        if spacy:
            reached = first_time_at(variant["epochs"], spacy["test_accuracy"])
            variant["seconds_to_spacy_test_accuracy"] = reached
            if reached is not None:
                variant["share_of_spacy_training_time"] = round(
                    reached / spacy["training_seconds"], 3
                )
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(format_table(result))
    print(f"written to {args.output}")
    return 0


def format_table(result: dict[str, Any]) -> str:
    lines = []
    for variant in result["variants"]:
        lines.append(
            f"{variant['name']}: training starts at {variant['train_start_seconds']:.1f} s; "
            f"{result['target']:.1%} test at {variant['seconds_to_target']} s"
            + (
                f"; spaCy's test accuracy at {variant['seconds_to_spacy_test_accuracy']} s"
                if result["spacy"]
                else ""
            )
        )
        lines.append("  epoch   seconds   dev acc   test acc   best.ckpt test acc")
        for row in variant["epochs"]:
            lines.append(
                f"  {row['epoch']:5d} {row['seconds']:9.1f} {row['val_acc']:9.4f} "
                f"{row['test_acc']:10.4f} {row['best_ckpt_test_acc']:20.4f}"
            )
    spacy = result["spacy"]
    if spacy:
        lines.append(
            f"spaCy: trained {spacy['training_seconds']:.0f} s, "
            f"final test accuracy {spacy['test_accuracy']:.4f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
