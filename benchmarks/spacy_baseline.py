"""A second peer: spaCy 3's CNN ``tagger`` (the ``efficiency`` recipe) on EWT UPOS.

Runs in a separate virtual environment that has spaCy (never seqtag's; torch is not needed)::

    python3 -m venv /work/spacyenv
    /work/spacyenv/bin/pip install "spacy>=3.7,<4"
    /work/spacyenv/bin/python benchmarks/spacy_baseline.py prepare
    nice -n 10 /work/spacyenv/bin/python benchmarks/spacy_baseline.py train
    /work/spacyenv/bin/python benchmarks/spacy_baseline.py speed --input sentences.txt \\
        --batch-size 1000 --json /tmp/spacy_speed.json [--tags tagged.tsv]

Everything spaCy writes (corpora, vectors, config, trained pipelines) goes to ``--workdir``
(default ``/work/spacyenv/ewt_upos``), outside the repository; only the quality JSON,
``benchmarks/quality/spacy_ewt_upos.json``, lands here.

``prepare``
    Converts EWT train/dev/test CoNLL-U to spaCy ``DocBin`` files with spaCy's Python API, one
    ``Doc`` per sentence: the syntactic words (multiword-token ranges and empty nodes skipped, as
    in ``flair_baseline.py``), their spaces from ``SpaceAfter=No``, and UPOS as ``token.tag_``.
    ``spacy convert`` is not used because its CoNLL-U converter puts XPOS (PTB tags) in
    ``tag_`` and UPOS in ``pos_``, while the ``tagger`` component learns ``tag_``. Then
    ``spacy init vectors en w2v-en-100d.glove.txt`` (the shared vectors as GloVe text: spaCy's
    reader counts the lines and supplies the word2vec ``rows dims`` header itself when the first
    line is not one, so no header-ed copy is needed), and ``spacy init config -p tagger -o
    efficiency`` with ``[initialize] vectors`` pointing at them, ``include_static_vectors =
    true`` in the tok2vec's ``MultiHashEmbed`` (the efficiency config has it off), and
    ``gold_preproc = true`` for both corpora so training and the dev score use the gold tokens
    (spaCy otherwise re-tokenizes the reference text with its own tokenizer).
``train``
    ``spacy train`` on CPU with the efficiency config's recipe (Adam 0.001, dropout 0.1, batches
    compounding from 100 to 1,000 words, dev evaluation every 200 steps, early stop after 1,600
    steps without a better dev score, at most 20,000 steps), plus a cap of ``--max-epochs``
    (default 30) so that a run cannot exceed about 15 minutes on 2 cores; spaCy keeps
    ``model-best`` by dev tag accuracy. On EWT the early stop ends it first: in the recorded run
    the best dev score came at step 2,800 (epoch 6) and training stopped at step 4,400 (epoch
    14), after 475 s on a loaded 2-core machine. Then tags EWT test on its gold tokens with
    ``model-best`` and writes ``benchmarks/quality/spacy_ewt_upos.json``: test UPOS accuracy,
    the dev curve, the training time, the commands and the versions.
``speed``
    Tags a plain-text file (one sentence per line, tokens separated by spaces) on gold tokens:
    ``Doc(nlp.vocab, words=line.split())`` for each line, streamed through ``nlp.pipe(docs,
    batch_size=N)`` (the pipeline is only ``tok2vec`` + ``tagger``; ``N`` defaults to the
    pipeline's ``[nlp] batch_size``, 1,000). Reports wall time from opening the file to the
    last tag written, tokens/s, and the process's peak RSS (``VmHWM``), and prints them as JSON
    (``--json PATH`` writes them too; ``--tags PATH`` writes ``token<TAB>tag`` lines, a blank
    line after each sentence).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
EWT = DATA / "ud_en_ewt"
SPLITS = {
    "train": EWT / "en_ewt-ud-train.conllu",
    "dev": EWT / "en_ewt-ud-dev.conllu",
    "test": EWT / "en_ewt-ud-test.conllu",
}
GLOVE_VECTORS = DATA / "embeddings" / "w2v-en-100d.glove.txt"
WORKDIR = Path("/work/spacyenv/ewt_upos")
QUALITY_JSON = REPO / "benchmarks" / "quality" / "spacy_ewt_upos.json"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``VmHWM`` of /proc/self/status), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def read_conllu(path: Path) -> list[tuple[list[str], list[bool], list[str]]]:
    """(words, spaces, UPOS) per sentence of a CoNLL-U file; ranges and empty nodes skipped."""
    sentences = []
    words: list[str] = []
    spaces: list[bool] = []
    tags: list[str] = []
    range_end = 0  # last word ID of the multiword token being read, 0 outside one
    range_space = True
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            line = line.rstrip("\n")
            if not line.strip():
                if words:
                    sentences.append((words, spaces, tags))
                words, spaces, tags, range_end = [], [], [], 0
                continue
            if line.startswith("#"):
                continue
            fields = line.split("\t")
            space = "SpaceAfter=No" not in fields[9].split("|")
            if "-" in fields[0]:
                range_end = int(fields[0].split("-")[1])
                range_space = space
                continue
            if "." in fields[0]:
                continue
            word_id = int(fields[0])
            if range_end:
                # Inside a multiword token: no space between its words, its own after the last.
                space = range_space if word_id == range_end else False
                if word_id >= range_end:
                    range_end = 0
            words.append(fields[1])
            spaces.append(space)
            tags.append(fields[3])
    if words:
        sentences.append((words, spaces, tags))
    return sentences


def spacy_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "spacy", *args]


def run_logged(
    command: list[str], log: Path | None = None, stamps: list[float] | None = None
) -> str:
    """Run a command, stream its output (and keep it in ``log``); stop on failure.

    ``stamps`` receives, per output line, the seconds from the start to when it arrived (spaCy
    prints a training-table row right after each dev evaluation, so this is its clock).
    """
    print("$", shlex.join(command), flush=True)
    lines = []
    started = time.perf_counter()
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "ANSI_COLORS_DISABLED": "1"},  # wasabi's switch: plain log lines
    ) as process:
        for line in process.stdout:
            if stamps is not None:
                stamps.append(round(time.perf_counter() - started, 2))
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    output = "".join(lines)
    if log:
        log.write_text(output)
    if process.returncode:
        sys.exit(f"failed with exit status {process.returncode}: {shlex.join(command)}")
    return output


def run_prepare(args: argparse.Namespace) -> dict:
    import spacy
    from spacy.tokens import Doc, DocBin

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    missing = [str(p) for p in [*SPLITS.values(), GLOVE_VECTORS] if not p.exists()]
    if missing:
        print("missing data files:", *missing, sep="\n  ", file=sys.stderr)
        sys.exit(2)
    nlp = spacy.blank("en")
    counts = {}
    for split, path in SPLITS.items():
        bin_ = DocBin(attrs=["ORTH", "TAG"])
        sentences = read_conllu(path)
        for words, spaces, tags in sentences:
            bin_.add(Doc(nlp.vocab, words=words, spaces=spaces, tags=tags))
        bin_.to_disk(work / f"{split}.spacy")
        counts[split] = {
            "sentences": len(sentences),
            "tokens": sum(len(words) for words, _, _ in sentences),
        }
        print(f"{split}: {counts[split]['sentences']} sentences, {counts[split]['tokens']} tokens")

    run_logged(spacy_command("init", "vectors", "en", str(GLOVE_VECTORS), str(work / "vectors")))

    from spacy.util import load_config

    base = work / "config.base.cfg"
    options = ["-l", "en", "-p", "tagger", "-o", "efficiency", "-F"]
    run_logged(spacy_command("init", "config", *options, str(base)))
    config = load_config(base, interpolate=False)
    config["paths"]["train"] = str(work / "train.spacy")
    config["paths"]["dev"] = str(work / "dev.spacy")
    config["paths"]["vectors"] = str(work / "vectors")
    embed = config["components"]["tok2vec"]["model"]["embed"]
    if "include_static_vectors" not in embed:
        sys.exit("the efficiency config has no include_static_vectors option in tok2vec.embed")
    embed["include_static_vectors"] = True
    for corpus in ("train", "dev"):
        config["corpora"][corpus]["gold_preproc"] = True
    config.to_disk(work / "config.cfg")
    print(f"wrote {work / 'config.cfg'}")
    return {"workdir": str(work), "splits": counts}


def tag_accuracy(nlp, path: Path) -> tuple[float, int]:
    """UPOS accuracy of ``nlp`` on the gold tokens of a ``.spacy`` file: (accuracy, tokens)."""
    from spacy.tokens import Doc, DocBin

    gold = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    inputs = (
        Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
        for doc in gold
    )
    correct = total = 0
    for reference, predicted in zip(gold, nlp.pipe(inputs), strict=True):
        assert len(reference) == len(predicted)
        correct += sum(r.tag_ == p.tag_ for r, p in zip(reference, predicted, strict=True))
        total += len(reference)
    return correct / total, total


def parse_training_log(output: str, stamps: list[float] | None = None) -> list[dict]:
    """The rows of spaCy's console training table, keyed by its header (``E # LOSS TOK2VEC
    LOSS TAGGER TAG_ACC POS_ACC SCORE``): accuracies as fractions, losses and score as shown;
    with ``stamps`` (one per line, from :func:`run_logged`) each row's ``seconds`` too."""
    names: list[str] = []
    rows = []
    for number, line in enumerate(output.splitlines()):
        fields = line.split()
        if fields[:2] == ["E", "#"]:
            names, rest = ["epoch", "step"], fields[2:]
            while rest:
                if rest[0] == "LOSS":
                    names.append(f"loss_{rest[1].lower()}")
                    rest = rest[2:]
                else:
                    names.append(f"dev_{rest[0].lower()}" if rest[0] != "SCORE" else "score")
                    rest = rest[1:]
        elif names and len(fields) == len(names) and fields[0].isdigit():
            row: dict = dict(zip(names, fields, strict=True))
            for name, value in row.items():
                if name in ("epoch", "step"):
                    row[name] = int(value)
                elif name.startswith("dev_"):
                    row[name] = round(float(value) / 100, 6)  # the table shows percentages
                else:
                    row[name] = float(value)
            if stamps is not None and number < len(stamps):
                row["seconds"] = stamps[number]
            rows.append(row)
    return rows


def run_train(args: argparse.Namespace) -> dict:
    import spacy
    import thinc

    work = args.workdir
    if not (work / "config.cfg").exists():
        sys.exit(f"no {work / 'config.cfg'}: run `prepare` first")
    output = work / "model"
    overrides = [
        f"--training.max_epochs={args.max_epochs}",
        f"--training.max_steps={args.max_steps}",
        f"--system.seed={args.seed}",
    ]
    command = spacy_command("train", str(work / "config.cfg"), "--output", str(output))
    command += ["--gpu-id", "-1", *overrides]
    load_before = os.getloadavg()
    start = time.perf_counter()
    stamps: list[float] = []
    log = run_logged(command, work / "train.log", stamps)
    train_seconds = time.perf_counter() - start
    curve = parse_training_log(log, stamps)

    nlp = spacy.load(output / "model-best")
    eval_start = time.perf_counter()
    accuracy, tokens = tag_accuracy(nlp, work / "test.spacy")
    eval_seconds = time.perf_counter() - eval_start
    dev_accuracy, _ = tag_accuracy(nlp, work / "dev.spacy")
    # model-best is the row with the highest dev score, unrounded: TAG_ACC (the score weights
    # give it 1.0), where the table's SCORE column is rounded to 2 decimals.
    best = max(curve, key=lambda row: row["dev_tag_acc"]) if curve else None
    script = "benchmarks/spacy_baseline.py"
    python = "/work/spacyenv/bin/python"
    result = {
        "tool": f"spacy {spacy.__version__}",
        "task": "ewt_upos",
        "metric": "accuracy",
        "test_accuracy": accuracy,
        "test_tokens": tokens,
        "dev_accuracy_model_best": dev_accuracy,
        "model": "spacy init config -p tagger -o efficiency: tok2vec (MultiHashEmbed NORM/PREFIX/"
        "SUFFIX/SHAPE + static vectors, MaxoutWindowEncoder width 96 depth 4) + tagger",
        "vectors": "w2v-en-100d.glove.txt (spacy init vectors; static, not fine-tuned)",
        "tokens": "gold (EWT syntactic words; gold_preproc = true)",
        "training": {
            "max_epochs": args.max_epochs,
            "max_steps": args.max_steps,
            "seed": args.seed,
            "other_settings": "spaCy defaults of the efficiency config: Adam 0.001, dropout "
            "0.1, batch_by_words compounding 100->1000, eval_frequency 200, patience 1600",
            "last_logged_epoch": curve[-1]["epoch"] if curve else None,
            "last_logged_step": curve[-1]["step"] if curve else None,
            "best_dev": best,
            "dev_curve": curve,
            "dev_curve_note": "dev_pos_acc is 0 throughout: the tagger learns token.tag_ (UPOS "
            "here) and nothing sets token.pos_; seconds: from the start of `spacy train` to "
            "the row's line",
            "wall_seconds": train_seconds,
            "nice": os.nice(0),
        },
        "test_eval_seconds": eval_seconds,
        "commands": [
            "python3 -m venv /work/spacyenv",
            '/work/spacyenv/bin/pip install "spacy>=3.7,<4"',
            f"{python} {script} prepare --workdir {work}",
            f"nice -n 10 {python} {script} train --workdir {work} --max-epochs "
            f"{args.max_epochs} --max-steps {args.max_steps} --seed {args.seed}",
            "  runs: " + shlex.join(command),
        ],
        "versions": {
            "spacy": spacy.__version__,
            "thinc": thinc.__version__,
            "python": platform.python_version(),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"test UPOS accuracy {accuracy:.4f} on {tokens} tokens; training {train_seconds:.0f} s")
    return result


def run_speed(args: argparse.Namespace) -> dict:
    import spacy
    from spacy.tokens import Doc
    from thinc.api import get_current_ops

    load_start = time.perf_counter()
    nlp = spacy.load(args.model)
    load_seconds = time.perf_counter() - load_start
    batch_size = args.batch_size or nlp.batch_size
    counts = {"sentences": 0, "tokens": 0}

    def docs():
        with open(args.input, encoding="utf-8") as stream:
            for line in stream:
                words = line.split()
                if not words:
                    continue
                counts["sentences"] += 1
                counts["tokens"] += len(words)
                yield Doc(nlp.vocab, words=words)

    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.tags, "w", encoding="utf-8")) if args.tags else None
        for doc in nlp.pipe(docs(), batch_size=batch_size, n_process=args.n_process):
            if out:
                out.write("".join(f"{t.text}\t{t.tag_}\n" for t in doc) + "\n")
    seconds = time.perf_counter() - start
    return {
        "tool": f"spacy {spacy.__version__}",
        "model": str(args.model),
        "pipeline": nlp.pipe_names,
        "thinc_ops": get_current_ops().name,
        "input": str(args.input),
        "tags": str(args.tags) if args.tags else None,
        "batch_size": batch_size,
        "n_process": args.n_process,
        "sentences": counts["sentences"],
        "tokens": counts["tokens"],
        "model_load_seconds": load_seconds,
        "wall_seconds": seconds,
        "tokens_per_second": counts["tokens"] / seconds,
        "peak_rss_mib": peak_rss_mib(),
        "load_average_after": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="mode", required=True)
    prepare = commands.add_parser("prepare", help="DocBins, vectors and config in --workdir")
    train = commands.add_parser("train", help="spacy train, then test accuracy as JSON")
    speed = commands.add_parser("speed", help="tag a one-sentence-per-line text file")
    for sub in (prepare, train):
        sub.add_argument("--workdir", type=Path, default=WORKDIR)
    train.add_argument("--max-epochs", type=int, default=30)
    train.add_argument("--max-steps", type=int, default=20000, help="0: no step limit")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--json", type=Path, default=QUALITY_JSON)
    speed.add_argument("--input", type=Path, required=True)
    speed.add_argument("--model", type=Path, default=WORKDIR / "model" / "model-best")
    speed.add_argument("--batch-size", type=int, default=None)
    speed.add_argument("--n-process", type=int, default=1, help="nlp.pipe's worker processes")
    speed.add_argument("--tags", type=Path, default=None, help="write token<TAB>tag lines")
    speed.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.mode == "prepare":
        run_prepare(args)
    elif args.mode == "train":
        run_train(args)
    else:
        result = run_speed(args)
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
