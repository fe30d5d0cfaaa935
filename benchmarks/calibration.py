"""Calibration: ECE before and after temperature scaling, token and span level, over seeds.

    python benchmarks/calibration.py                  # EWT UPOS and CoNLL-2000, seeds 0 1 2
    python benchmarks/calibration.py --tasks chunking --seeds 0 --epochs 5
    python benchmarks/calibration.py --ewt-config configs/ud_ewt_upos_crf.yaml --tasks ewt
    python benchmarks/calibration.py --quick --out /tmp/calibration.json   # smoke run only
    python benchmarks/calibration.py -- --data.batch_size 16   # after --: for every seqtag run

Two tasks: ``ewt`` (UD English EWT UPOS, the quick-start recipe ``configs/ud_ewt_upos.yaml``:
softmax, character CNN) and ``chunking`` (CoNLL-2000, ``configs/conll2000_chunking.yaml``:
CRF, character CNN); ``--ewt-config`` and ``--chunking-config`` choose other configs. For
every task and seed, ``seqtag fit`` trains with its calibration on (``--calibration.enabled
true``, the default: :class:`seqtag.TemperatureCalibration` fits the temperature on the dev
set at the end of training and stores it in the model and the checkpoints), ``seqtag test``
evaluates the checkpoint the config's model selection kept and reports the test ECE with the
fitted temperature and with T = 1
(``test_ece``/``test_ece_uncalibrated``; for span tasks ``test_span_ece`` and
``test_span_ece_uncalibrated`` as well). For span tasks ``seqtag predict`` then writes the test
set's spans with their confidences (JSON Lines), and the precision of the spans whose
confidence is at least ``--min-confidence`` (0.9) is measured against the gold spans, with the
number of spans kept.

Prints a table (mean ± sd over the seeds) with the done-when targets and writes
``benchmarks/calibration.json``: every seed's metrics, temperature, commands and timings, the
versions, date and machine. Corpora: ``data/`` (EWT, in the project) and ``../shared/data``
(CoNLL-2000 and the vectors); the script exits with status 2 and the list of missing files
when a task's files are absent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seeded_runs import (
    REPO,
    RunFailed,
    add_common_options,
    check_target,
    checkpoint_temperature,
    command_line,
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
    run_all,
    run_logged,
    seqtag_command,
    show,
    split_extra,
    target_lines,
)

TASKS = {
    "ewt": "configs/ud_ewt_upos.yaml",
    "chunking": "configs/conll2000_chunking.yaml",
}
#: Done-when targets: (task, label, metric, operator, threshold).
TARGETS = (
    ("ewt", "token ECE on the test set after calibration", "ece", "<=", 0.02),
    ("chunking", "span ECE on the test set after calibration", "span_ece", "<=", 0.02),
    ("chunking", "precision of spans with confidence >= 0.9", "precision_at_min", ">=", 0.97),
)
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


# -- spans kept above a confidence ------------------------------------------------------------
def span_precision(
    predictions: Path, gold_path: Path, data: dict[str, Any], thresholds: list[float]
) -> dict[str, Any]:
    """Precision, recall and count of the predicted spans whose confidence is >= each threshold.

    ``predictions``: ``seqtag predict`` JSON Lines, a ``spans`` list per sentence
    (``start``, ``end`` exclusive, ``type``, ``confidence``); the gold spans are read from the
    test file as ``seqtag test`` reads them (conlleval's chunk rules).
    """
    from seqtag.data.io.formats import read_corpus
    from seqtag.data.schemes import get_spans

    scheme = data["tag_scheme"]
    missing_tag = data.get("missing_tag", "_")
    gold_sentences = read_corpus(
        gold_path,
        data.get("format", "conllu"),
        tag_field=data.get("tag_field", "upos"),
        token_column=data.get("token_column", 0),
        tag_column=data.get("tag_column", -1),
    )
    records = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    if len(records) != len(gold_sentences):
        raise RunFailed(
            f"{predictions}: {len(records)} sentences, the test file has {len(gold_sentences)}"
        )
    gold_spans: list[set[tuple[str, int, int]]] = []
    predicted: list[list[tuple[tuple[str, int, int], float]]] = []
    for number, (record, sentence) in enumerate(zip(records, gold_sentences, strict=True)):
        if list(record["tokens"]) != list(sentence.tokens):
            raise RunFailed(f"{predictions}: sentence {number + 1} is not the test file's")
        if "spans" not in record:
            raise RunFailed(
                f"{predictions}: no 'spans' in the predictions: this seqtag's predict does not "
                "write span confidences"
            )
        tags = list(sentence.tags)
        if missing_tag is not None and missing_tag in tags:
            raise RunFailed(f"{gold_path}: the test set must be fully annotated")
        gold_spans.append(set(get_spans(tags, scheme)))
        predicted.append(
            [((s["type"], s["start"], s["end"]), float(s["confidence"])) for s in record["spans"]]
        )
    total_gold = sum(len(g) for g in gold_spans)
    total_predicted = sum(len(p) for p in predicted)
    rows = []
    for threshold in [0.0, *thresholds]:
        kept = correct = 0
        for gold, spans in zip(gold_spans, predicted, strict=True):
            for span, confidence in spans:
                if confidence >= threshold:
                    kept += 1
                    correct += span in gold
        rows.append(
            {
                "min_confidence": threshold,
                "spans_kept": kept,
                "fraction_of_predicted_spans": kept / total_predicted if total_predicted else None,
                "precision": correct / kept if kept else None,
                "recall": correct / total_gold if total_gold else None,
            }
        )
    return {
        "gold_spans": total_gold,
        "predicted_spans": total_predicted,
        "sentences": len(records),
        "by_threshold": rows,
    }


def predict_spans(checkpoint: str, test_path: Path, folder: Path, threads: int) -> tuple[Path, str]:
    output = folder / "test_predictions.jsonl"
    command = [
        *seqtag_command(),
        "predict",
        "--ckpt_path",
        checkpoint,
        "--data.predict_path",
        str(test_path),
        "--prediction.output",
        str(output),
        "--prediction.format",
        "jsonl",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(folder),
    ]
    run_logged(command, folder / "predict.log", threads)
    return output, command_line(command)


# -- one task, one seed -----------------------------------------------------------------------
def run_one(job: dict[str, Any]) -> dict[str, Any]:
    args, task, config_name, view, seed = (
        job["args"],
        job["task"],
        job["config"],
        job["view"],
        job["seed"],
    )
    folder = job["work"] / "runs" / task / f"seed{seed}"
    print(f"{task} seed {seed}: training ({folder}) ...", file=sys.stderr, flush=True)
    run = fit_and_test(
        config_name,
        folder,
        seed,
        args.threads,
        epochs=args.epochs,
        common=[*view.options(), *args.extra],
        fit_only=["--calibration.enabled", "true"],
    )
    metrics = run["test_metrics"]
    run["temperature"] = checkpoint_temperature(run["best_checkpoint"])
    run["acc"] = metrics.get("test_acc")
    run["f1"] = metrics.get("test_f1")
    for name in ("ece", "ece_uncalibrated", "span_ece", "span_ece_uncalibrated"):
        run[name] = metrics.get(f"test_{name}")
    data = data_options(load_config(config_name))
    if data.get("tag_scheme") and view.test_path is not None:
        output, command = predict_spans(
            run["best_checkpoint"], view.test_path, folder, args.threads
        )
        run["commands"].append(command)
        thresholds = sorted({*THRESHOLDS, args.min_confidence})
        run["span_confidence"] = span_precision(output, view.test_path, data, thresholds)
        at_min = next(
            r
            for r in run["span_confidence"]["by_threshold"]
            if r["min_confidence"] == args.min_confidence
        )
        # Every predicted span (threshold 0) scores as seqtag test does: the two must agree.
        everything = run["span_confidence"]["by_threshold"][0]["precision"]
        tested = metrics.get("test_precision")
        run["span_confidence"]["all_spans_precision_equals_test_precision"] = (
            None if everything is None or tested is None else abs(everything - tested) < 1e-4
        )
        run["precision_at_min"] = at_min["precision"]
        run["spans_kept_at_min"] = at_min["spans_kept"]
        run["kept_fraction_at_min"] = at_min["fraction_of_predicted_spans"]
    print(
        f"{task} seed {seed}: done in {run['fit_seconds']:.0f} s "
        f"({run['epochs_run']} epochs), T = {run['temperature']}",
        file=sys.stderr,
        flush=True,
    )
    return run


SUMMARY_FIELDS = (
    "acc",
    "f1",
    "ece",
    "ece_uncalibrated",
    "span_ece",
    "span_ece_uncalibrated",
    "temperature",
    "precision_at_min",
    "spans_kept_at_min",
    "kept_fraction_at_min",
    "fit_seconds",
    "fit_seconds_per_epoch",
)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary = {}
    for name in SUMMARY_FIELDS:
        values = [run.get(name) for run in runs]
        if any(v is not None for v in values):
            summary[name] = mean_sd(values)
    return summary


def table(results: dict[str, Any], min_confidence: float) -> str:
    rows = [["task", "measure", "before (T = 1)", "after (fitted T)"]]
    for task, result in results.items():
        s = result["summary"]
        name = f"{task} ({Path(result['config']).stem})"
        if "acc" in s:
            rows.append([name, "test accuracy %", show(s.get("acc"), 100, 2), "(unchanged)"])
        if "f1" in s:
            rows.append([name, "test span F1 %", show(s.get("f1"), 100, 2), "(unchanged)"])
        rows.append([name, "token ECE", show(s.get("ece_uncalibrated")), show(s.get("ece"))])
        if "span_ece" in s or "span_ece_uncalibrated" in s:
            rows.append(
                [name, "span ECE", show(s.get("span_ece_uncalibrated")), show(s.get("span_ece"))]
            )
        rows.append([name, "temperature", "1", show(s.get("temperature"), 1, 3)])
        if "precision_at_min" in s:
            kept = s["spans_kept_at_min"]
            fraction = s.get("kept_fraction_at_min")
            label = f"spans with confidence >= {min_confidence:g}"
            rows.append([name, f"precision of {label}", "", show(s["precision_at_min"])])
            rows.append(
                [
                    name,
                    f"{label} (of all predicted)",
                    "",
                    f"{show(kept, 1, 0)} ({show(fraction, 100, 1)} %)",
                ]
            )
        rows.append([name, "training s per epoch", "", show(s.get("fit_seconds_per_epoch"), 1, 1)])
    return markdown_table(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--ewt-config", default=TASKS["ewt"], help="config of the ewt task")
    parser.add_argument(
        "--chunking-config", default=TASKS["chunking"], help="config of the chunking task"
    )
    parser.add_argument("--min-confidence", type=float, default=0.9)
    add_common_options(parser, str(REPO / "benchmarks" / "calibration.json"))
    own, extra = split_extra(argv)
    args = parser.parse_args(own)
    args.extra = extra
    finish_common_options(args, parser)
    if not 0.0 < args.min_confidence <= 1.0:
        parser.error("--min-confidence must be in (0, 1]")
    args.configs = {
        "ewt": args.ewt_config,
        "chunking": args.chunking_config,
    }
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    configs = {task: args.configs[task] for task in args.tasks}
    if missing_inputs("calibration.py", configs.values()):
        return 2
    work = make_work_folder(args.work_dir, "seqtag-calibration-")
    if work is None:
        return 2
    record: dict[str, Any] = {
        "benchmark": "confidence calibration: ECE before/after temperature scaling, token and "
        "span level; precision of confident spans",
        **environment([sys.argv[0], *argv]),
        "settings": {
            "seeds": args.seeds,
            "epochs": args.epochs or "config",
            "threads_per_run": args.threads,
            "jobs": args.jobs,
            "min_confidence": args.min_confidence,
            "calibration": "seqtag fit --calibration.enabled true (TemperatureCalibration)",
            "extra_seqtag_options": args.extra,
            "work_dir": str(work),
        },
        "tasks": {},
    }
    views = {
        task: corpus_view(
            load_config(name),
            work / "data" / task,
            args.max_train_sentences,
            args.max_eval_sentences,
        )
        for task, name in configs.items()
    }
    jobs = [
        {
            "args": args,
            "task": task,
            "config": name,
            "view": views[task],
            "seed": seed,
            "work": work,
        }
        for task, name in configs.items()
        for seed in args.seeds
    ]
    try:
        runs = run_all(args.jobs, run_one, jobs)
    except RunFailed as err:
        print(f"a run failed; work folder kept: {work}\n{err}", file=sys.stderr)
        return 1
    for task, name in configs.items():
        task_runs = [run for job, run in zip(jobs, runs, strict=True) if job["task"] == task]
        record["tasks"][task] = {
            "config": name,
            "data": views[task].description,
            "summary": summarize(task_runs),
            "runs": task_runs,
        }
    targets = []
    for task, label, metric, op, threshold in TARGETS:
        if task not in record["tasks"]:
            continue
        summary = record["tasks"][task]["summary"].get(metric)
        values = [v for v in (summary or {}).get("values", []) if v is not None]
        worst = (max(values) if op == "<=" else min(values)) if values else None
        name = f"{task}: {label}"
        if metric == "precision_at_min":
            name = f"{task}: precision of spans with confidence >= {args.min_confidence:g}"
        mean = summary["mean"] if summary else None
        targets.append(
            {"task": task, "metric": metric, **check_target(name, mean, op, threshold, worst)}
        )
    record["targets"] = targets
    output = Path(args.out)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    print(table(record["tasks"], args.min_confidence))
    print(f"\nDone-when targets (mean over seeds {args.seeds}):")
    print("\n".join(target_lines(targets)))
    print_commands_and_finish(
        ((task, run) for task, result in record["tasks"].items() for run in result["runs"]),
        record,
        args,
        output,
        work,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
