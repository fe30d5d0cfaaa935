"""What tagging costs with and without what the caller may not need: confidences, and int8.

    python benchmarks/inference_options.py [--ckpt_path CRF.ckpt] \\
        [--int8_ckpt_path runs/ud_ewt_upos/checkpoints/best.ckpt] [--repeats 5] \\
        [--output benchmarks/inference_options.json]
    python benchmarks/inference_options.py --quick --output /tmp/smoke.json   # smoke run only

**Confidences.** ``tag()`` of a BiLSTM-CRF (1x256) on UD English EWT test (2,077 sentences,
25,094 tokens), batches of 256, with ``confidences=True`` (Viterbi plus the forward-backward
pass of the marginals) and ``confidences=False`` (Viterbi only), on one thread and on all of
torch's threads: tokens/s, best of ``--repeats``, and whether the tags are identical. Without
``--ckpt_path`` the CRF is trained here for one epoch on EWT train with the shared 100-d vectors
(its accuracy does not matter to the speed; the tags are compared, not scored).

**int8.** torch's eager ``torch.ao.quantization.quantize_dynamic`` is deprecated; the maintained
successor is torchao (``quantize_``), installable beside the CPU torch (``pip install
torchao``; it does not pull a CUDA torch). torchao's dynamic int8 config
(``Int8DynamicActivationInt8WeightConfig``) quantizes ``nn.Linear`` modules only: it refuses
``nn.LSTM`` (whose weights are flat per-gate parameters, not one ``weight``), and the LSTM is
nearly all of the work. So this script records, on one thread, on the quick-start-like model
(BiLSTM 1x256 + character CNN, softmax; ``--int8_ckpt_path`` or trained here for one epoch):
float32 speed and EWT test UPOS accuracy; torchao's int8 of what it can quantize (the Linear
layers) with its speed and accuracy; torchao's refusal of the LSTM, verbatim; and, for reference
only, the deprecated eager path (LSTM and Linear), which is what the issue measured at 1.33x.
``seqtag predict --quantize int8`` is worth offering only through a maintained API at >= 1.3x
with accuracy within 0.05 points; ``int8.decision`` says whether the measurement allows it.

Speed on a shared machine is only as good as its load: run it alone (the JSON records the load
average); ``--quick`` is a smoke run (a few hundred sentences, a tiny model) whose numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from run import DEFAULT_DATA, data_paths, machine_info, report_missing_data  # noqa: E402

FULL = {"train_sentences": None, "test_sentences": None, "hidden_size": 256, "limit": None}
QUICK = {"train_sentences": 300, "test_sentences": 200, "hidden_size": 32, "limit": 5}
BATCH_SIZE = 256
#: ``seqtag predict --quantize int8`` would need this much speed at this accuracy (points).
INT8_MIN_SPEEDUP, INT8_MAX_ACCURACY_LOSS = 1.3, 0.05


def read_split(path: Path, limit: int | None) -> list[Any]:
    from seqtag.data.io.formats import read_corpus

    sentences = read_corpus(path, "conllu")
    return sentences[:limit] if limit else sentences


def train_model(paths: dict[str, Path], sizes: dict, decoder: str, chars: str) -> Any:
    """A model trained for one epoch (``--quick``: a few batches) through a plain Trainer."""
    import lightning.pytorch as pl

    from seqtag import SequenceTagger, TaggingDataModule

    pl.seed_everything(0, verbose=False)
    train = read_split(paths["train"], sizes["train_sentences"])
    data = TaggingDataModule(
        train_path=[(list(s.tokens), list(s.tags)) for s in train],
        batch_size=32,
        vectors=str(paths["vectors"]),
    )
    model = SequenceTagger(hidden_size=sizes["hidden_size"], decoder=decoder, char_features=chars)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=sizes["limit"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    return model.eval()


def load_or_train(
    ckpt: Path | None, paths: dict[str, Path], sizes: dict, decoder: str, chars: str
) -> tuple[Any, str]:
    from seqtag import SequenceTagger

    if ckpt is not None:
        return SequenceTagger.load_from_checkpoint(ckpt, map_location="cpu").eval(), str(ckpt)
    what = f"{decoder}, char_features {chars}, hidden {sizes['hidden_size']}, trained 1 epoch here"
    return train_model(paths, sizes, decoder, chars), what


def best_rate(model: Any, sentences: list[list[str]], repeats: int, **options: Any) -> float:
    """Best tokens/s of ``model.tag(sentences, **options)`` over ``repeats`` (after a warm-up)."""
    tokens = sum(map(len, sentences))
    model.tag(sentences[:BATCH_SIZE], batch_size=BATCH_SIZE, **options)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.tag(sentences, batch_size=BATCH_SIZE, **options)
        best = min(best, time.perf_counter() - start)
    return tokens / best


def confidences_section(model: Any, sentences: list[list[str]], repeats: int) -> dict:
    """``tag()`` with and without confidences, at one thread and at all threads."""
    with_them = [[tag for tag, _ in s] for s in model.tag(sentences, batch_size=BATCH_SIZE)]
    without = model.tag(sentences, batch_size=BATCH_SIZE, confidences=False)
    found: dict = {"tags_identical": with_them == without, "threads": {}}
    before = torch.get_num_threads()
    for label, threads in (("one", 1), ("all", usable_cores())):
        torch.set_num_threads(threads)
        rates = {
            "confidences_true": best_rate(model, sentences, repeats),
            "confidences_false": best_rate(model, sentences, repeats, confidences=False),
        }
        found["threads"][label] = {
            "torch_threads": threads,
            **{name: round(rate) for name, rate in rates.items()},
            "speedup": round(rates["confidences_false"] / rates["confidences_true"], 3),
        }
        print(f"CRF tag(), {threads} thread(s): {found['threads'][label]}", flush=True)
    torch.set_num_threads(before)
    return found


def usable_cores() -> int:
    """The cores this process may run on (all of them, unless an affinity mask says less)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def accuracy(model: Any, test: list[Any]) -> tuple[float, list[list[str]]]:
    """EWT test UPOS accuracy (percent) of ``model.tag()``, and the tags."""
    tags = model.tag([list(s.tokens) for s in test], batch_size=BATCH_SIZE, confidences=False)
    gold = [tag for s in test for tag in s.tags]
    found = [tag for sentence in tags for tag in sentence]
    return 100.0 * sum(g == f for g, f in zip(gold, found, strict=True)) / len(gold), tags


def measure(model: Any, test: list[Any], repeats: int, reference: list[list[str]] | None) -> dict:
    """Speed (one thread) and accuracy of one variant; agreement with the float32 tags."""
    sentences = [list(s.tokens) for s in test]
    score, tags = accuracy(model, test)
    found = {
        "tokens_per_s": round(best_rate(model, sentences, repeats, confidences=False)),
        "accuracy": round(score, 3),
    }
    if reference is not None:
        pairs = [zip(x, y, strict=True) for x, y in zip(tags, reference, strict=True)]
        flat = [a == b for sentence in pairs for a, b in sentence]
        found["tags_equal_to_float32"] = round(sum(flat) / len(flat), 5)
    return found


def torchao_status() -> dict:
    """Whether torchao imports here, and its version (or why not)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao
    except Exception as error:  # not installed, or a broken build: say which
        return {"available": False, "why": f"{type(error).__name__}: {error}"[:300]}
    return {"available": True, "version": torchao.__version__}


def int8_section(model: Any, test: list[Any], repeats: int) -> dict:
    """float32 against torchao's int8 (what it supports) and the deprecated eager path."""
    from torch import nn

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    found: dict = {"threads": 1, "torchao": torchao_status()}
    try:
        found["float32"] = measure(model, test, repeats, None)
        _, reference = accuracy(model, test)
        if found["torchao"]["available"]:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

            lstm = copy.deepcopy(model)
            try:
                quantize_(
                    lstm,
                    Int8DynamicActivationInt8WeightConfig(),
                    filter_fn=lambda module, _: isinstance(module, nn.LSTM),
                )
                found["torchao"]["lstm"] = "quantized"
            except Exception as error:  # its refusal is the result
                found["torchao"]["lstm"] = f"refused: {type(error).__name__}: {error}"[:300]
            linear = copy.deepcopy(model)
            quantize_(linear, Int8DynamicActivationInt8WeightConfig())  # nn.Linear only
            found["torchao"]["linear_only"] = measure(linear, test, repeats, reference)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation warning: why it is a reference only
            from torch.ao.quantization import quantize_dynamic

            eager = quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8, inplace=False)
        found["deprecated_eager_reference"] = measure(eager, test, repeats, reference)
    finally:
        torch.set_num_threads(before)
    found["decision"] = int8_decision(found)
    return found


def int8_decision(found: dict) -> dict:
    """Whether a maintained API gives ``--quantize int8`` its speed at its accuracy."""
    float32 = found["float32"]
    rule = (
        f"offer only through a maintained API (torchao) at >= {INT8_MIN_SPEEDUP}x float32 "
        f"speed with accuracy within {INT8_MAX_ACCURACY_LOSS} points"
    )
    torchao = found["torchao"]
    if not torchao["available"]:
        return {"offer": False, "rule": rule, "why": "torchao is not installed here"}
    linear = torchao["linear_only"]
    speedup = linear["tokens_per_s"] / float32["tokens_per_s"]
    change = linear["accuracy"] - float32["accuracy"]
    offer = torchao["lstm"] == "quantized" and speedup >= INT8_MIN_SPEEDUP
    offer = offer and -change <= INT8_MAX_ACCURACY_LOSS
    why = (
        "torchao quantizes the LSTM, and its int8 meets the rule"
        if offer
        else f"torchao's int8 covers the Linear layers only (LSTM {torchao['lstm']}): "
        f"{speedup:.3f}x the float32 speed, accuracy {change:+.3f} points"
    )
    return {"offer": offer, "rule": rule, "torchao_speedup": round(speedup, 3), "why": why}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--ckpt_path", type=Path, help="a CRF checkpoint (else trained here)")
    parser.add_argument("--int8_ckpt_path", type=Path, help="the quick-start model's checkpoint")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes; the best counts")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data and model")
    parser.add_argument(
        "--output", type=Path, default=REPO / "benchmarks" / "inference_options.json"
    )
    args = parser.parse_args(argv)
    if report_missing_data("inference_options.py", args.data_root):
        return 2
    warnings.filterwarnings("ignore", module="lightning")
    sizes = QUICK if args.quick else FULL
    repeats = 1 if args.quick else args.repeats
    paths = data_paths(args.data_root)
    test = read_split(paths["test"], sizes["test_sentences"])
    result: dict = {
        "mode": "quick" if args.quick else "full",
        "test_sentences": len(test),
        "test_tokens": sum(len(s.tokens) for s in test),
        "batch_size": BATCH_SIZE,
        "repeats": repeats,
        "machine": machine_info(),
    }
    crf, result["crf_model"] = load_or_train(args.ckpt_path, paths, sizes, "crf", "none")
    sentences = [list(s.tokens) for s in test]
    result["confidences"] = confidences_section(crf, sentences, repeats)
    quick_start, result["int8_model"] = load_or_train(
        args.int8_ckpt_path, paths, sizes, "softmax", "cnn"
    )
    result["int8"] = int8_section(quick_start, test, repeats)
    print(f"int8 (one thread): {json.dumps(result['int8'], indent=1)}", flush=True)
    result["load_average_after"] = machine_info()["load_average"]
    result["date"] = date.today().isoformat()
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
