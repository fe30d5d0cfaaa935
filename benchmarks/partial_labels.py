"""Partial labels: CoNLL-2000 chunking with training tags hidden, against full and naive training.

    python benchmarks/partial_labels.py                       # 5 variants x seeds 0 1 2
    python benchmarks/partial_labels.py --variants full partial-tokens naive-tokens --jobs 2
    python benchmarks/partial_labels.py --quick --out /tmp/partial_labels.json   # smoke run only
    python benchmarks/partial_labels.py -- --data.batch_size 16   # after --: for every seqtag run

Variants, each trained with ``seqtag fit`` (``configs/conll2000_chunking.yaml``: BiLSTM-CRF,
character CNN; ``--config`` for another column-format span config) and scored on the test set
with ``seqtag test`` (span F1 of the checkpoint kept by the config's model selection):

- ``full``: the training file as it is.
- ``partial-tokens``: ``--token-fraction`` (50%) of the training tokens, chosen at random, get
  the missing-tag marker ``_`` (the config's ``data.missing_tag``) instead of their tag; the
  CRF learns from the tags each token may have.
- ``naive-tokens``: the same tokens get ``O`` instead; the file is then rewritten in canonical
  form of its scheme (an ``I-`` whose ``B-`` was hidden starts the chunk, as conlleval reads it),
  since seqtag refuses an IOB2 file where most chunks start with ``I-``.
- ``partial-chunks``: ``--chunk-fraction`` (25%) of the training chunks, chosen at random: every
  token of each gets ``_``.
- ``naive-chunks``: the same chunks become ``O`` tokens (missing annotations, the usual case).

Only the training sentences are touched: the dev set (``data.val_from_train``: the last 1,000
training sentences of CoNLL-2000) and the test set stay fully annotated. For training seed ``S``
the hidden tokens and chunks are drawn with the seed ``--hide-seed-offset + S`` (recorded), so
the partial and naive variants of one seed hide exactly the same tags. The derived training files
go into the work folder (a temporary folder outside the repository by default: the shared corpora
must not be copied into the project), never next to the corpora.

Prints test F1 (mean ± sd over the seeds) per variant and the done-when targets (50% of the
tokens hidden: partial within 1.5 F1 of full, and at least 3 F1 above naive) and writes
``benchmarks/partial_labels.json`` with every run's metrics, commands and timings, the hiding
seeds and counts, the versions, date and machine. Exits with status 2 and the list of missing
files when ``../shared/data`` lacks CoNLL-2000 or the vectors.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seeded_runs import (
    REPO,
    CorpusView,
    RunFailed,
    add_common_options,
    check_target,
    corpus_view,
    data_options,
    environment,
    finish_common_options,
    fit_and_test,
    load_config,
    make_work_folder,
    markdown_table,
    mean_sd,
    missing_inputs,
    print_commands_and_finish,
    read_sentence_blocks,
    run_all,
    show,
    split_extra,
    target_lines,
    write_sentence_blocks,
)

VARIANTS = ("full", "partial-tokens", "naive-tokens", "partial-chunks", "naive-chunks")
DESCRIPTIONS = {
    "full": "all training tags",
    "partial-tokens": "{tokens:.0%} of tokens hidden as '{marker}' (partial-label CRF)",
    "naive-tokens": "the same tokens tagged O (naive)",
    "partial-chunks": "{chunks:.0%} of chunks hidden as '{marker}' (partial-label CRF)",
    "naive-chunks": "the same chunks tagged O (naive)",
}


# -- hiding tags ---------------------------------------------------------------------------------
def hidden_corpora(
    view: CorpusView,
    data: dict[str, Any],
    folder: Path,
    hide_seed: int,
    token_fraction: float,
    chunk_fraction: float,
    variants: list[str],
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write the partial and naive training files of one hiding seed; their paths and counts.

    Tokens: exactly ``round(token_fraction x training tokens)`` tokens, drawn without
    replacement over the whole training part. Chunks: ``round(chunk_fraction x chunks)`` of the
    chunks (``get_spans`` in the corpus scheme), each hidden whole. The sentences held out as
    the dev set (``val_from_train``) are copied unchanged.
    """
    from seqtag.data.schemes import convert_tags, get_spans

    marker = data.get("missing_tag", "_")
    if marker is None:
        raise SystemExit("the config sets data.missing_tag: null; partial labels need a marker")
    if data.get("format") != "columns":
        raise SystemExit("partial_labels.py rewrites column files only (data.format: columns)")
    scheme = data.get("tag_scheme")
    if not scheme:
        raise SystemExit("partial_labels.py needs a span config (data.tag_scheme)")
    column = int(data.get("tag_column", -1))

    blocks = read_sentence_blocks(view.train_path, "columns")
    held_out = view.val_from_train
    train = blocks[:-held_out] if held_out else blocks
    dev = blocks[-held_out:] if held_out else []
    rows = [[line.split() for line in block] for block in train]
    tags = [[fields[column] for fields in sentence] for sentence in rows]
    if any(marker in sentence for sentence in tags):
        raise SystemExit(
            f"{view.train_path}: the training file already holds the marker {marker!r}"
        )

    rng = random.Random(hide_seed)
    positions = [(s, i) for s, sentence in enumerate(tags) for i in range(len(sentence))]
    hidden_tokens = set(rng.sample(positions, round(token_fraction * len(positions))))
    chunks = [(s, span) for s, sentence in enumerate(tags) for span in get_spans(sentence, scheme)]
    chosen = rng.sample(chunks, round(chunk_fraction * len(chunks)))
    hidden_chunk_tokens = {(s, i) for s, (_, start, end) in chosen for i in range(start, end)}

    def write(name: str, hidden: set[tuple[int, int]], replacement: str) -> Path:
        out = []
        for s, sentence in enumerate(rows):
            new = [replacement if (s, i) in hidden else tag for i, tag in enumerate(tags[s])]
            if replacement != marker:
                new = convert_tags(new, scheme, scheme)  # canonical: orphan I- starts a chunk
            lines = []
            for fields, tag in zip(sentence, new, strict=True):
                fields = list(fields)
                fields[column] = tag
                lines.append(" ".join(fields))
            out.append(lines)
        return write_sentence_blocks(out + dev, folder / f"{name}.txt")

    def fully_hidden(hidden: set[tuple[int, int]]) -> int:
        return sum(all((s, i) in hidden for i in range(len(t))) for s, t in enumerate(tags))

    files: dict[str, Path] = {}
    plan = {
        "partial-tokens": (hidden_tokens, marker),
        "naive-tokens": (hidden_tokens, "O"),
        "partial-chunks": (hidden_chunk_tokens, marker),
        "naive-chunks": (hidden_chunk_tokens, "O"),
    }
    for variant in variants:
        if variant in plan:
            files[variant] = write(variant, *plan[variant])
    counts = {
        "hide_seed": hide_seed,
        "training_sentences": len(rows),
        "training_tokens": len(positions),
        "hidden_tokens": len(hidden_tokens),
        "hidden_tokens_that_were_O": sum(tags[s][i] == "O" for s, i in hidden_tokens),
        "sentences_fully_hidden_tokens": fully_hidden(hidden_tokens),
        "training_chunks": len(chunks),
        "hidden_chunks": len(chosen),
        "hidden_chunk_tokens": len(hidden_chunk_tokens),
        "sentences_fully_hidden_chunks": fully_hidden(hidden_chunk_tokens),
        "dev_sentences_untouched": len(dev),
        "files": {variant: str(path) for variant, path in files.items()},
    }
    return files, counts


# -- runs ------------------------------------------------------------------------------------------
def run_one(job: dict[str, Any]) -> dict[str, Any]:
    args, variant, seed = job["args"], job["variant"], job["seed"]
    folder = job["work"] / "runs" / variant / f"seed{seed}"
    common = job["view"].options(train_path=job["train_file"])
    print(f"{variant} seed {seed}: training ({folder}) ...", file=sys.stderr, flush=True)
    run = fit_and_test(
        args.config, folder, seed, args.threads, epochs=args.epochs, common=[*common, *args.extra]
    )
    run["variant"] = variant
    run["f1"] = run["test_metrics"].get("test_f1")
    run["hiding"] = job["hiding"]
    print(
        f"{variant} seed {seed}: test F1 {run['f1']}, {run['fit_seconds']:.0f} s "
        f"({run['epochs_run']} epochs)",
        file=sys.stderr,
        flush=True,
    )
    return run


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/conll2000_chunking.yaml")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--token-fraction", type=float, default=0.5)
    parser.add_argument("--chunk-fraction", type=float, default=0.25)
    parser.add_argument(
        "--hide-seed-offset",
        type=int,
        default=1000,
        help="tags are hidden with the seed OFFSET + training seed (default 1000)",
    )
    add_common_options(parser, str(REPO / "benchmarks" / "partial_labels.json"))
    own, extra = split_extra(argv)
    args = parser.parse_args(own)
    args.extra = extra
    finish_common_options(args, parser)
    for name in ("token_fraction", "chunk_fraction"):
        if not 0.0 < getattr(args, name) < 1.0:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    args.variants = [v for v in VARIANTS if v in args.variants]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if missing_inputs("partial_labels.py", [args.config]):
        return 2
    config = load_config(args.config)
    data = data_options(config)
    work = make_work_folder(args.work_dir, "seqtag-partial-")
    if work is None:
        return 2
    view = corpus_view(
        config, work / "data" / "base", args.max_train_sentences, args.max_eval_sentences
    )
    hiding: dict[int, dict[str, Any]] = {}
    files: dict[int, dict[str, Path]] = {}
    for seed in args.seeds:
        files[seed], hiding[seed] = hidden_corpora(
            view,
            data,
            work / "data" / f"seed{seed}",
            args.hide_seed_offset + seed,
            args.token_fraction,
            args.chunk_fraction,
            args.variants,
        )
    jobs = [
        {
            "args": args,
            "variant": variant,
            "seed": seed,
            "view": view,
            "work": work,
            "train_file": files[seed].get(variant),
            "hiding": None if variant == "full" else hiding[seed],
        }
        for variant in args.variants
        for seed in args.seeds
    ]
    try:
        runs = run_all(args.jobs, run_one, jobs)
    except RunFailed as err:
        print(f"a run failed; work folder kept: {work}\n{err}", file=sys.stderr)
        return 1

    marker = data.get("missing_tag", "_")
    results = {}
    for variant in args.variants:
        variant_runs = [r for r in runs if r["variant"] == variant]
        results[variant] = {
            "training_tags": DESCRIPTIONS[variant].format(
                tokens=args.token_fraction, chunks=args.chunk_fraction, marker=marker
            ),
            "test_f1": mean_sd([r["f1"] for r in variant_runs]),
            "fit_seconds_per_epoch": mean_sd([r["fit_seconds_per_epoch"] for r in variant_runs]),
            "runs": variant_runs,
        }

    def mean(variant: str) -> float | None:
        return results[variant]["test_f1"]["mean"] if variant in results else None

    def paired(a: str, b: str) -> list[float] | None:
        if a not in results or b not in results:
            return None
        fa = {r["seed"]: r["f1"] for r in results[a]["runs"]}
        fb = {r["seed"]: r["f1"] for r in results[b]["runs"]}
        seeds = [s for s in args.seeds if fa[s] is not None and fb[s] is not None]
        return [100 * (fa[s] - fb[s]) for s in seeds]

    comparisons = []
    for kind, target in (("tokens", True), ("chunks", False)):
        partial, naive = f"partial-{kind}", f"naive-{kind}"
        for other, op, threshold, label in (
            ("full", "<=", 1.5, f"F1 of full minus F1 of {partial} (points)"),
            (naive, ">=", 3.0, f"F1 of {partial} minus F1 of {naive} (points)"),
        ):
            if mean(partial) is None or mean(other) is None:
                continue
            diffs = paired(other, partial) if other == "full" else paired(partial, other)
            value = (
                100 * (mean("full") - mean(partial))
                if other == "full"
                else 100 * (mean(partial) - mean(other))
            )
            worst = (max(diffs) if op == "<=" else min(diffs)) if diffs else None
            entry = check_target(label, value, op, threshold, worst)
            entry.update({"done_when_target": target, "per_seed_differences": diffs})
            comparisons.append(entry)

    record: dict[str, Any] = {
        "benchmark": "partial-label training on CoNLL-2000 chunking: tags hidden at random in "
        "the training set; test span F1",
        **environment([sys.argv[0], *argv]),
        "settings": {
            "config": args.config,
            "seeds": args.seeds,
            "epochs": args.epochs or "config",
            "threads_per_run": args.threads,
            "jobs": args.jobs,
            "token_fraction": args.token_fraction,
            "chunk_fraction": args.chunk_fraction,
            "hide_seed_offset": args.hide_seed_offset,
            "missing_tag": marker,
            "extra_seqtag_options": args.extra,
            "work_dir": str(work),
            "data": view.description,
        },
        "hiding": {str(seed): counts for seed, counts in hiding.items()},
        "variants": results,
        "comparisons": comparisons,
    }
    output = Path(args.out)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    rows = [["variant", "training tags", "test F1 %", "per seed", "s / epoch"]]
    for variant, result in results.items():
        scores = ", ".join(
            "n/a" if v is None else f"{100 * v:.2f}" for v in result["test_f1"]["values"]
        )
        rows.append(
            [
                variant,
                result["training_tags"],
                show(result["test_f1"], 100, 2),
                scores,
                show(result["fit_seconds_per_epoch"], 1, 1),
            ]
        )
    print(markdown_table(rows))
    done_when = [c for c in comparisons if c["done_when_target"]]
    others = [c for c in comparisons if not c["done_when_target"]]
    print(
        f"\nDone-when targets ({args.token_fraction:.0%} of tokens hidden; means over seeds "
        f"{args.seeds}, worst paired seed in brackets):"
    )
    print("\n".join(target_lines(done_when, 2)) or "  (variants not run)")
    if others:
        print("Whole chunks hidden (same thresholds, for information):")
        print("\n".join(target_lines(others, 2)))
    for seed, counts in hiding.items():
        print(
            f"seed {seed}: hide seed {counts['hide_seed']}, {counts['hidden_tokens']:,} of "
            f"{counts['training_tokens']:,} tokens, {counts['hidden_chunks']:,} of "
            f"{counts['training_chunks']:,} chunks hidden"
        )
    print_commands_and_finish(
        ((run["variant"], run) for result in results.values() for run in result["runs"]),
        record,
        args,
        output,
        work,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
