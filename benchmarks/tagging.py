"""Tagging at corpus scale: ``seqtag predict`` on EWT's training text x1 and x16.

    python benchmarks/tagging.py --ckpt_path runs/ud_ewt_upos/checkpoints/best.ckpt \\
        [--copies 16] [--ddp] [--ray] [--output benchmarks/tagging.json]

Writes the EWT training text (UD English EWT from ``../shared/data``, one sentence per line)
once and 16 times over, then measures, each in a fresh process, run back to back:

- ``seqtag predict`` on x1 and on x16 (one process): wall time, end-to-end tokens/s, and the
  peak resident memory of the process (``VmHWM``), with the x16 output checked to be the x1
  output 16 times;
- with ``--ddp``, the x16 file with 2 CPU processes (DDP, gloo): wall time, tokens/s, each
  process's peak memory, and its output checked to be byte-identical to 1 process's;
- ``tag()`` in one process on the x1 sentences (model loaded, one warm-up batch first): the
  rate the end-to-end numbers are compared with;
- with ``--ray``, the Ray Data example on the x1 file as JSON Lines (2 CPUs);
- with ``--flair PYTHON`` / ``--spacy PYTHON``, the peers' own scripts (``flair_baseline.py
  tag``, ``spacy_baseline.py speed``, see their docstrings for building their environments and
  models) on the x16 file.

Machines differ: compare the ratios, taken in one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EWT_TRAIN = REPO / ".." / "shared" / "data" / "ud_en_ewt" / "en_ewt-ud-train.conllu"

#: Runs seqtag's CLI, then prints this process's peak resident memory (VmHWM, KiB).
_RUN_CLI = (
    "import sys\n"
    "from seqtag.cli.main import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "finally:\n"
    "    peak = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "    print('PEAK_KIB', peak, file=sys.stderr)\n"
)

#: Times tag() on a text file in one process (args: checkpoint, text file, batch size).
_RUN_TAG = """
import sys, time, json
from seqtag import SequenceTagger
model = SequenceTagger.load_from_checkpoint(sys.argv[1], map_location="cpu")
sentences = [line.split() for line in open(sys.argv[2], encoding="utf-8") if line.strip()]
model.tag(sentences[:256], batch_size=int(sys.argv[3]))
start = time.perf_counter()
model.tag(sentences, batch_size=int(sys.argv[3]))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": sum(map(len, sentences))}))
"""


def write_texts(folder: Path, copies: int) -> tuple[Path, Path, int]:
    """EWT's training text once and ``copies`` times; returns the paths and x1 token count."""
    sys.path.insert(0, str(REPO))
    from seqtag.data.io.formats import read_corpus

    sentences = read_corpus(EWT_TRAIN, "conllu")
    text = "".join(" ".join(s.tokens) + "\n" for s in sentences)
    once, many = folder / "ewt_train_x1.txt", folder / f"ewt_train_x{copies}.txt"
    once.write_text(text, encoding="utf-8")
    with open(many, "w", encoding="utf-8") as stream:
        for _ in range(copies):
            stream.write(text)
    return once, many, sum(len(s.tokens) for s in sentences)


def run_predict(
    ckpt: Path, source: Path, output: Path, *extra: str, env: dict[str, str] | None = None
) -> dict:
    """``seqtag predict`` in a fresh process (``env``: its environment, default this one's):
    wall seconds and peak RSS of every process."""
    runner = output.parent / "run_seqtag.py"  # a file: DDP starts its second process by it
    runner.write_text(_RUN_CLI, encoding="utf-8")
    command = [
        sys.executable,
        str(runner),
        "predict",
        f"--ckpt_path={ckpt}",
        f"--data.predict_path={source}",
        "--data.predict_format=text",
        f"--prediction.output={output}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=output.parent, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"seqtag predict failed:\n{done.stderr[-3000:]}")
    peaks = [  # each process prints "PEAK_KIB n" (DDP's other processes with a prefix)
        int(line.split("PEAK_KIB", 1)[1].split()[0]) / 1024
        for line in done.stderr.splitlines()
        if "PEAK_KIB" in line
    ]
    return {"seconds": round(seconds, 2), "peak_rss_mib": [round(p, 1) for p in peaks]}


def run_tag(ckpt: Path, source: Path, batch_size: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _RUN_TAG, str(ckpt), str(source), str(batch_size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--ddp", action="store_true", help="also 2 CPU processes (DDP)")
    parser.add_argument("--ray", action="store_true", help="also the Ray Data example")
    parser.add_argument("--flair", type=Path, help="python of flair's venv")
    parser.add_argument("--spacy", type=Path, help="python of spaCy's venv")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "tagging.json")
    args = parser.parse_args(argv)
    if not EWT_TRAIN.exists():
        raise SystemExit(f"needs the shared EWT corpus: {EWT_TRAIN}")
    ckpt = args.ckpt_path.resolve()
    results: dict = {"checkpoint": str(args.ckpt_path), "copies": args.copies}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        once, many, tokens = write_texts(folder, args.copies)
        results["tokens_x1"], results["tokens_xN"] = tokens, tokens * args.copies
        single = {}
        for name, source in (("x1", once), (f"x{args.copies}", many)):
            output = folder / f"{name}.conll"
            single[name] = run_predict(ckpt, source, output)
            n = tokens * (args.copies if name != "x1" else 1)
            single[name]["tokens_per_s"] = round(n / single[name]["seconds"])
            print(f"seqtag predict {name}: {single[name]}", flush=True)
        x1_output = (folder / "x1.conll").read_bytes()
        results["xN_output_is_x1_repeated"] = (
            folder / f"x{args.copies}.conll"
        ).read_bytes() == x1_output * args.copies
        results["predict"] = single
        tag = run_tag(ckpt, once, 256)
        results["tag_tokens_per_s"] = round(tag["tokens"] / tag["seconds"])
        print(f"tag(): {results['tag_tokens_per_s']} tokens/s", flush=True)
        big = single[f"x{args.copies}"]
        x1_peak = single["x1"]["peak_rss_mib"][0]
        results["ratios"] = {
            "xN_end_to_end_over_tag": round(big["tokens_per_s"] / results["tag_tokens_per_s"], 3),
            "xN_peak_over_x1_peak": round(big["peak_rss_mib"][0] / x1_peak, 3),
            "xN_peak_minus_x1_peak_mib": round(big["peak_rss_mib"][0] - x1_peak, 1),
        }
        if args.ddp:
            output = folder / "ddp.conll"
            ddp = run_predict(
                ckpt,
                many,
                output,
                "--trainer.accelerator=cpu",
                "--trainer.strategy=ddp",
                "--trainer.devices=2",
            )
            ddp["tokens_per_s"] = round(tokens * args.copies / ddp["seconds"])
            ddp["identical_to_1_process"] = digest(output) == digest(
                folder / f"x{args.copies}.conll"
            )
            results["predict_ddp_2_processes"] = ddp
            print(f"seqtag predict DDP x2: {ddp}", flush=True)
        results.update(run_peers(args, once, many, folder))
    results["environment"] = environment()
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results["ratios"], indent=2))


def run_peers(args: argparse.Namespace, once: Path, many: Path, folder: Path) -> dict:
    """The optional Ray run and the peers, each in its own environment."""
    found: dict = {}
    if args.ray:
        found["ray"] = run_ray(args.ckpt_path.resolve(), once, folder)
        print(f"ray: {found['ray']}", flush=True)
    if args.flair:
        command = [str(args.flair), str(REPO / "benchmarks" / "flair_baseline.py")]
        command += ["tag", "--input", str(many), "--json", str(folder / "flair.json")]
        subprocess.run(command, check=True)
        found["flair"] = json.loads((folder / "flair.json").read_text())
    if args.spacy:
        command = [str(args.spacy), str(REPO / "benchmarks" / "spacy_baseline.py"), "speed"]
        command += ["--input", str(many), "--json", str(folder / "spacy.json")]
        subprocess.run(command, check=True)
        found["spacy"] = json.loads((folder / "spacy.json").read_text())
    return found


def run_ray(ckpt: Path, once: Path, folder: Path) -> dict:
    source = folder / "x1.jsonl"
    with open(once, encoding="utf-8") as lines, open(source, "w", encoding="utf-8") as target:
        for number, line in enumerate(lines):
            target.write(json.dumps({"id": number, "tokens": line.split()}) + "\n")
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "ray_tagging.py"),
            "--ckpt_path",
            str(ckpt),
            "--input",
            str(source),
            "--output",
            str(folder / "ray_out"),
            "--num-cpus",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    return {"seconds": round(time.perf_counter() - start, 2), "input": "x1 as JSON Lines"}


def environment() -> dict:
    import platform

    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


if __name__ == "__main__":
    main()
