"""Smoke test of benchmarks/run.py: it runs and reports every number (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, shared_path

VARIANT_FIELDS = (
    "train_tokens_per_second",
    "train_epoch_seconds",
    "train_epoch_tokens",
    "startup_seconds",
    "startup_seconds_from_process_start",
    "tag_api_tokens_per_second",
    "predict_tokens_per_second",
    "peak_rss_mib",
    "peak_rss_mib_at_first_batch",
    "peak_rss_mib_after_training",
    "peak_rss_mib_after_tag",
    "padding_efficiency_sampler",
    "padding_efficiency_measured",
    "lstm_forward_flops_per_token",
    "lstm_train_gflops_per_second",
    "matmul_peak_gflops_per_second",
    "lstm_fraction_of_matmul_peak",
    "torch_num_threads",
)


def _run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``benchmarks/SCRIPT`` with this Python from the repository root."""
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_quick_benchmark_reports_every_number(tmp_path):
    shared_path("ud_en_ewt", "en_ewt-ud-train.conllu")
    shared_path("embeddings", "w2v-en-100d.bin")
    output = tmp_path / "results.json"
    done = _run_script("run.py", "--quick", "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text(encoding="utf-8"))
    assert results["mode"] == "quick"
    machine = results["machine"]
    assert machine["torch_num_threads"] > 0
    assert machine["torch_version"] and machine["cpu_model"]
    assert len(machine["load_average"]) == 3
    assert set(results["variants"]) == {"softmax", "crf"}
    for name, variant in results["variants"].items():
        assert variant["decoder"] == name
        for field in VARIANT_FIELDS:
            value = variant[field]
            assert isinstance(value, (int, float)) and value > 0, (name, field, value)
        for field in ("padding_efficiency_sampler", "padding_efficiency_measured"):
            assert variant[field] <= 1.0
        # The imports alone are a floor under the training peak, measured in a fresh process.
        assert 0 < variant["import_floor_rss_mib"] < variant["peak_rss_mib_after_training"]
        assert variant["peak_rss_mib_training_above_imports"] == pytest.approx(
            variant["peak_rss_mib_after_training"] - variant["import_floor_rss_mib"]
        )
        assert isinstance(variant["matplotlib_installed"], bool)
        # The sampler's own estimate describes exactly the batches that were timed.
        assert variant["padding_efficiency_sampler"] == pytest.approx(
            variant["padding_efficiency_measured"]
        )
    assert "softmax" in done.stdout and "crf" in done.stdout


@pytest.mark.slow
def test_quick_scaling_run_reports_each_fraction(tmp_path):
    shared_path("ud_en_ewt", "en_ewt-ud-train.conllu")
    shared_path("embeddings", "w2v-en-100d.bin")
    output = tmp_path / "scaling.json"
    done = _run_script("run.py", "--quick", "--scaling", "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(output.read_text(encoding="utf-8"))["scaling"]
    assert [row["train_fraction"] for row in rows.values()] == [0.25, 0.5, 1.0]
    tokens = [row["train_epoch_tokens"] for row in rows.values()]
    assert tokens[0] < tokens[1] < tokens[2]  # each run really saw a bigger slice
    assert all(row["microseconds_per_token"] > 0 for row in rows.values())
    assert "us/token" in done.stdout


@pytest.mark.parametrize("script", ["run.py", "training_bound.py", "char_training.py"])
def test_missing_data_exits_with_a_message(tmp_path, script):
    done = _run_script(script, "--data-root", str(tmp_path), timeout=120)
    assert done.returncode == 2
    assert "missing" in done.stderr and "en_ewt-ud-train.conllu" in done.stderr


@pytest.mark.slow
def test_quality_runner_trains_tests_and_summarises_each_seed(tmp_path):
    output = tmp_path / "smoke.json"
    limits = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]
    limits += ["--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2"]
    options = ["--seeds", "1", "2", "--name", "ci-smoke", "--output", str(output)]
    options += ["--runs-dir", str(tmp_path / "runs")]
    done = _run_script("quality.py", "configs/ud_ewt_upos.yaml", *options, "--", *limits)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(output.read_text(encoding="utf-8"))
    assert summary["metric"] == "test_acc" and summary["seeds"] == [1, 2]
    assert [run["seed"] for run in summary["runs"]] == [1, 2]
    assert all(0 < score <= 1 for score in summary["scores"])
    assert summary["mean"] == pytest.approx(sum(summary["scores"]) / 2)
    assert "--seed_everything 2" in summary["runs"][1]["commands"][0]
    assert "test_acc" in done.stdout


@pytest.mark.slow
def test_training_bound_reports_the_lstm_kernels_share_and_ceiling(tmp_path):
    """A smoke run: every variant reports a Trainer rate, a profiled step and a ceiling (how
    they compare is a measurement of the machine, not behaviour to assert)."""
    shared_path("ud_en_ewt", "en_ewt-ud-train.conllu")
    shared_path("embeddings", "w2v-en-100d.bin")
    out = tmp_path / "bound.json"
    args = ("--epochs", "1", "--limit-batches", "5", "--steps", "5", "--output", str(out))
    done = _run_script("training_bound.py", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["variants"]) == {"softmax", "crf", "softmax_sgd", "crf_sgd"}
    for variant in result["variants"].values():
        assert variant["steps"] == 5
        assert variant["trainer_tokens_per_s"] > 0
        # Kernel time and step time are timed separately: only their presence is behaviour.
        assert variant["lstm_kernel_ms_per_step"] > 0 and variant["step_ms"] > 0
        assert variant["lstm_kernel_share_of_step"] > 0
        # Everything but the LSTM kernels taking no time can only be faster.
        assert isinstance(variant["ceiling_tokens_per_s"], int | float)
        assert variant["tight_loop_tokens_per_s"] > 0
    assert result["matmul_peak_gflops"] > 0
    assert result["lstm_direction_fwd_bwd_ms"]["float32"] > 0
    assert "ceiling tokens/s" in done.stdout


@pytest.mark.slow
def test_char_training_reports_each_character_model(tmp_path):
    shared_path("ud_en_ewt", "en_ewt-ud-train.conllu")
    shared_path("embeddings", "w2v-en-100d.bin")
    out = tmp_path / "chars.json"
    args = ("--epochs", "1", "--limit-batches", "3", "--output", str(out))
    done = _run_script("char_training.py", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["measured_through"] == "plain Trainer, best epoch"
    assert set(result["seqtag_tokens_per_s"]) == {"none", "cnn", "lstm"}
    assert all(rate > 0 for rate in result["seqtag_tokens_per_s"].values())


@pytest.mark.slow
def test_training_scale_quick_run_measures_one_and_two_processes(tmp_path):
    """``training_scale.py --quick --modes memory``: x1 with 1 and 2 (DDP) processes, every
    number present (the full x16/x64 run is for an otherwise idle machine, never for tests)."""
    shared_path("ud_en_ewt", "en_ewt-ud-train.conllu")
    out = tmp_path / "scale.json"
    done = _run_script("training_scale.py", "--quick", "--modes", "memory", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["sizes"] == [1] and result["modes"] == ["memory"]
    assert "--quick" in result["command"] and result["machine"]["torch_num_threads"] > 0
    assert [run["run"] for run in result["runs"]] == ["x1-memory", "x1-memory-ddp"]
    for run, processes in zip(result["runs"], (1, 2), strict=True):
        assert "seqtag fit --config configs/ud_ewt_upos.yaml" in run["command"]
        assert run["corpus_tokens"] == result["tokens_x1"] > 0
        assert run["processes"] == processes and len(run["peak_rss_mib"]) == processes
        assert run["steps"] == result["steps"] and run["trained_tokens"] > 0
        for field in ("wall_s", "startup_s", "tokens_per_s", "summed_pss_peak_mib"):
            assert run[field] > 0, (run["run"], field)
        assert all(peak > 0 for peak in run["peak_rss_mib"])
        assert len(run["torch_threads"]) == processes
    assert "x1-memory-ddp" in done.stdout and "summed PSS" in done.stdout


@pytest.mark.slow
def test_inference_options_quick_run_reports_confidences_and_int8(tmp_path):
    """``inference_options.py --quick``: tag() with and without confidences at one and all
    threads (same tags), and the int8 section's measurements and decision, every number
    present (how they compare is the machine's, not behaviour)."""
    shared_path("ud_en_ewt", "en_ewt-ud-test.conllu")
    out = tmp_path / "options.json"
    done = _run_script("inference_options.py", "--quick", "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["mode"] == "quick" and result["test_tokens"] > 0
    assert result["confidences"]["tags_identical"] is True
    assert set(result["confidences"]["threads"]) == {"one", "all"}
    for row in result["confidences"]["threads"].values():
        assert row["confidences_true"] > 0 and row["confidences_false"] > 0
    int8 = result["int8"]
    assert int8["float32"]["tokens_per_s"] > 0 and 0 <= int8["float32"]["accuracy"] <= 100
    assert int8["deprecated_eager_reference"]["tokens_per_s"] > 0
    if int8["torchao"]["available"]:
        assert int8["torchao"]["linear_only"]["tokens_per_s"] > 0
    assert isinstance(int8["decision"]["offer"], bool) and int8["decision"]["why"]
    assert "CRF tag()" in done.stdout


def test_training_scale_without_the_corpus_exits_with_a_message(tmp_path):
    out = tmp_path / "scale.json"
    args = ("--quick", "--data-root", str(tmp_path), "--out", str(out))
    done = _run_script("training_scale.py", *args, timeout=120)
    assert done.returncode == 2
    assert "missing" in done.stderr and "en_ewt-ud-train.conllu" in done.stderr
    assert not out.exists()


@pytest.mark.slow
def test_time_to_accuracy_stamps_every_epoch_and_keeps_what_best_ckpt_holds(tmp_path):
    """Two epochs of the demo: every epoch stamped later than the last, its accuracies real
    fractions, and "the model you have" the best-by-dev epoch so far, not the best on test."""
    output = tmp_path / "tta.json"
    spacy = tmp_path / "spacy.json"
    curve = [{"epoch": 0, "step": 0, "dev_tag_acc": 0.5, "seconds": 10.0}]
    spacy.write_text(
        json.dumps(
            {
                "test_accuracy": 0.5,
                "training": {"wall_seconds": 100.0, "best_dev": curve[0], "dev_curve": curve},
                "commands": ["train it", "(runs)"],
            }
        ),
        encoding="utf-8",
    )
    done = _run_script(
        "time_to_accuracy.py",
        "--config",
        "configs/demo.yaml",
        "--variant",
        "short=--trainer.max_epochs 2 --trainer.limit_train_batches 10",
        "--no-default",
        "--spacy-json",
        str(spacy),
        "--output",
        str(output),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (variant,) = json.loads(output.read_text(encoding="utf-8"))["variants"]
    epochs = variant["epochs"]
    assert [row["epoch"] for row in epochs] == [0, 1]
    assert 0 < variant["train_start_seconds"] < epochs[0]["seconds"] < epochs[1]["seconds"]
    assert epochs[1]["seconds"] < variant["process_seconds"]
    for row in epochs:
        assert 0.0 < row["val_acc"] <= 1.0 and 0.0 < row["test_acc"] <= 1.0
    best = max(epochs, key=lambda row: row["val_acc"])
    assert epochs[-1]["best_ckpt_test_acc"] == best["test_acc"]
    assert "spaCy: trained 100 s, final test accuracy 0.5000" in done.stdout
    reached = [row["seconds"] for row in epochs if row["best_ckpt_test_acc"] >= 0.5]
    assert variant["seconds_to_spacy_test_accuracy"] == (reached[0] if reached else None)
