"""Tagging per core, end to end: ``seqtag predict`` against spaCy's tagger and against ``tag()``.

    python benchmarks/per_core.py --ckpt_path runs/ud_ewt_upos/checkpoints/best.ckpt \\
        --spacy /work/spacyenv/bin/python [--copies 4] [--cores 1 2] [--ddp]

A user with a fixed number of cores compares per core, so every side runs on the same cores
with the same thread count, each in a fresh process, back to back, on EWT's training text
repeated ``--copies`` times (one sentence per line, gold tokens):

- ``seqtag predict`` (file in, file out: the process's wall time, imports and loading the
  checkpoint included, and its peak resident memory) with ``OMP_NUM_THREADS`` set to the core
  count, so seqtag's thread policy keeps that count; with ``--ddp`` also one process per core
  (DDP, one thread each);
- ``tag()`` on the same sentences in one process, timed from the sentences in memory to the
  tags in memory (model loaded, one warm-up batch first): the rate of the network and its
  batching alone, which end to end is compared with; its tags must equal the file's;
- spaCy 3's efficiency tagger (``spacy_baseline.py speed``, needs its environment and trained
  ``model-best``, see its docstring), the process's wall time too, with ``nlp.pipe(n_process=N)``
  for N cores (spaCy's network runs on one thread per process).

For the LSTM's own limit, the ``tag()`` process also measures ``torch.mm``'s float32 peak at its
thread count: the BiLSTM's forward FLOPs per token (``run.lstm_forward_flops_per_token`` per
layer) at that peak is the most tokens/s any float32 implementation of this network could tag
on these cores. Prints a table and writes ``benchmarks/per_core.json``. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from run import machine_info  # noqa: E402
from tagging import EWT_TRAIN, run_predict, write_texts  # noqa: E402

#: Times tag() in one process and writes its tags (args: checkpoint, text, tags out, batch).
_RUN_TAG = """
import json, sys, time
import torch
sys.path.insert(0, sys.argv[5])
from run import lstm_forward_flops_per_token, matmul_peak_gflops
from seqtag import SequenceTagger
model = SequenceTagger.load_from_checkpoint(sys.argv[1], map_location="cpu")
sentences = [line.split() for line in open(sys.argv[2], encoding="utf-8") if line.strip()]
batch = int(sys.argv[4])
model.tag(sentences[:batch], batch_size=batch, confidences=False)
start = time.perf_counter()
tags = model.tag(sentences, batch_size=batch, confidences=False)
seconds = time.perf_counter() - start
with open(sys.argv[3], "w", encoding="utf-8") as out:
    for tokens, sentence_tags in zip(sentences, tags):
        out.write("".join(f"{t}\\t{g}\\n" for t, g in zip(tokens, sentence_tags)) + "\\n")
encoder = model.tagger.encoder.rnn
flops = sum(
    lstm_forward_flops_per_token(layer.input_size, layer.hidden_size)
    for layer in encoder.forward_layers
)
print(json.dumps({
    "seconds": seconds,
    "tokens": sum(map(len, sentences)),
    "threads": torch.get_num_threads(),
    "lstm_forward_flops_per_token": flops,
    "matmul_peak_gflops": matmul_peak_gflops(),
}))
"""


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a process that may use ``threads`` threads (every runtime's knob)."""
    count = str(threads)
    return {
        **os.environ,
        "OMP_NUM_THREADS": count,
        "MKL_NUM_THREADS": count,
        "OPENBLAS_NUM_THREADS": count,
        "BLIS_NUM_THREADS": count,
        "PYTHONPATH": str(REPO),
    }


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    """Wall seconds of a process, and its standard output; stop on failure."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def seqtag_predict(
    ckpt: Path, text: Path, out: Path, threads: int, *extra: str
) -> tuple[float, list[float]]:
    """Wall seconds of ``seqtag predict``, and each process's peak resident memory (MiB)."""
    done = run_predict(ckpt, text, out, *extra, env=thread_env(threads))
    return done["seconds"], done["peak_rss_mib"]


def read_tags(path: Path) -> list[str]:
    """The tag column of a ``token<TAB>tag`` file (blank lines between sentences)."""
    with open(path, encoding="utf-8") as stream:
        return [line.rstrip("\n").split("\t")[1] for line in stream if line.strip()]


def measure(args: argparse.Namespace, cores: int, text: Path, tokens: int, folder: Path) -> dict:
    """Every side on ``cores`` cores; tokens/s of each and the ratios the issue asks for."""
    row: dict[str, Any] = {"cores": cores}
    predicted = folder / f"predict-{cores}.conll"
    seconds, peaks = seqtag_predict(args.ckpt_path, text, predicted, cores, *args.predict_args)
    row["seqtag_predict"] = {
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds),
        "peak_rss_mib": peaks,
    }
    if args.ddp and cores > 1:
        ddp_out = folder / f"predict-ddp-{cores}.conll"
        extra = ("--trainer.accelerator=cpu", "--trainer.strategy=ddp")
        extra += (f"--trainer.devices={cores}",)
        seconds, peaks = seqtag_predict(args.ckpt_path, text, ddp_out, 1, *extra)
        row["seqtag_predict_processes"] = {
            "seconds": round(seconds, 2),
            "peak_rss_mib": peaks,
            "tokens_per_s": round(tokens / seconds),
            "same_output": ddp_out.read_bytes() == predicted.read_bytes(),
        }
    tagged = folder / f"tag-{cores}.tsv"
    command = [sys.executable, "-c", _RUN_TAG, str(args.ckpt_path), str(text), str(tagged)]
    command += [str(args.batch_size), str(REPO / "benchmarks")]
    _, stdout = timed(command, thread_env(cores), folder)
    tag = json.loads(stdout.strip().splitlines()[-1])
    row["tag"] = {"tokens_per_s": round(tag["tokens"] / tag["seconds"]), "threads": tag["threads"]}
    row["predict_tags_equal_tag"] = read_tags(predicted) == read_tags(tagged)
    limit = tag["matmul_peak_gflops"] * 1e9 / tag["lstm_forward_flops_per_token"]
    row["lstm_limit"] = {
        "forward_flops_per_token": tag["lstm_forward_flops_per_token"],
        "matmul_peak_gflops": round(tag["matmul_peak_gflops"], 1),
        "tokens_per_s": round(limit),
    }
    best = max(
        row["seqtag_predict"]["tokens_per_s"],
        row.get("seqtag_predict_processes", {}).get("tokens_per_s", 0),
    )
    row["ratios"] = {
        "predict_over_tag": round(
            row["seqtag_predict"]["tokens_per_s"] / row["tag"]["tokens_per_s"], 3
        ),
        "predict_share_of_lstm_limit": round(best / limit, 3),
        "tag_share_of_lstm_limit": round(row["tag"]["tokens_per_s"] / limit, 3),
    }
    if args.spacy:
        spacy_tags = folder / f"spacy-{cores}.tsv"
        command = [str(args.spacy), str(REPO / "benchmarks" / "spacy_baseline.py"), "speed"]
        command += ["--input", str(text), "--tags", str(spacy_tags), "--n-process", str(cores)]
        seconds, stdout = timed(command, thread_env(cores), folder)
        inner = json.loads(stdout[stdout.index("{") :])
        row["spacy"] = {
            "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds),
            "n_process": cores,
            "tokens_per_s_after_loading": round(inner["tokens_per_second"]),
        }
        row["ratios"]["predict_over_spacy"] = round(best / row["spacy"]["tokens_per_s"], 3)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--spacy", type=Path, help="python of spaCy's venv")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--cores", type=int, nargs="+", default=[1, len(os.sched_getaffinity(0))])
    parser.add_argument("--ddp", action="store_true", help="also one predict process per core")
    parser.add_argument("--batch-size", type=int, default=256, help="tag()'s, as predict's")
    parser.add_argument(
        "--predict-args", nargs="*", default=[], help="more seqtag predict options, e.g. chunks"
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "per_core.json")
    args = parser.parse_args()
    if not EWT_TRAIN.exists():
        print(f"per_core.py needs the shared EWT corpus: {EWT_TRAIN}", file=sys.stderr)
        return 2
    args.ckpt_path = args.ckpt_path.resolve()
    result: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "copies": args.copies}
    with tempfile.TemporaryDirectory(prefix="per-core-") as scratch:
        folder = Path(scratch)
        _, text, tokens_x1 = write_texts(folder, args.copies)
        tokens = tokens_x1 * args.copies
        result["tokens"] = tokens
        result["rows"] = []
        for cores in args.cores:
            row = measure(args, cores, text, tokens, folder)
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    result["machine"] = machine_info()
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for row in result["rows"]:
        print(
            f"{row['cores']} core(s): predict {row['seqtag_predict']['tokens_per_s']:,} tokens/s, "
            f"tag() {row['tag']['tokens_per_s']:,}, "
            f"LSTM limit {row['lstm_limit']['tokens_per_s']:,}"
            + (f", spaCy {row['spacy']['tokens_per_s']:,}" if "spacy" in row else "")
            + f"; {row['ratios']}"
        )
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
