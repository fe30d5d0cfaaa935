"""Micro-benchmarks of single components: character encoders and the CRF, on one batch.

    python benchmarks/micro.py [--repeats 30] [--output benchmarks/micro.json]

These timings used to be printed by unit tests (``tests/unit/models/test_chars.py``,
``tests/unit/models/test_crf.py``) that asserted nothing about them; a test that cannot fail is
not a test, and timing loops slow the suite down on a shared machine. Here they are one short
script that prints a table and writes JSON, with the machine's description (``run.py``'s
``machine_info``) beside the numbers.

Each measurement runs a few warm-up calls, then ``--repeats`` timed calls
(``time.perf_counter``), and reports the minimum and the median in milliseconds: other
processes on a shared machine inflate the mean, so the minimum is the figure to compare. No
data files are needed: batches are random, seeded, at realistic sizes.

- ``char_cnn``, ``char_lstm``: forward + backward of :class:`seqtag.models.chars.CharCNN` and
  :class:`~seqtag.models.chars.CharBiLSTM` in training mode on ``[32, 25, 15]`` character ids
  (32 sentences of 15-25 words, words of 1-15 characters, zero-padded).
- ``crf_train``, ``crf_decode``, ``crf_marginals``: :class:`seqtag.models.crf.layer.CRF` with 17
tags
  on emissions ``[32, 40, 17]`` (sentences of 20-40 tokens): negative log-likelihood forward +
  backward, Viterbi decoding, and marginals.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from run import machine_info

REPO = Path(__file__).resolve().parents[1]
WARMUP = 3


def measure(step: Callable[[], object], repeats: int) -> dict[str, float]:
    """Minimum and median milliseconds of ``step`` over ``repeats`` calls after a warm-up."""
    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"min_ms": 1e3 * min(times), "median_ms": 1e3 * statistics.median(times)}


def char_batch(num_chars: int = 40, batch: int = 32, words: int = 25, width: int = 15):
    """Seeded ``[batch, words, width]`` character ids, 0 at padding, and the real word count."""
    import torch

    gen = torch.Generator().manual_seed(6)
    lengths = torch.randint(15, words + 1, (batch,), generator=gen).tolist()
    chars = torch.zeros(batch, words, width, dtype=torch.long)
    for b, length in enumerate(lengths):
        for t, size in enumerate(torch.randint(1, width + 1, (length,), generator=gen).tolist()):
            chars[b, t, :size] = torch.randint(1, num_chars, (size,), generator=gen)
    return chars, sum(lengths)


def bench_chars(repeats: int) -> dict[str, dict]:
    import torch

    from seqtag.models.chars import CharBiLSTM, CharCNN

    chars, real_words = char_batch()
    results = {}
    for name, factory in (("char_cnn", CharCNN), ("char_lstm", CharBiLSTM)):
        torch.manual_seed(0)
        model = factory(40)
        model.train()

        def step(model=model) -> None:
            model.zero_grad(set_to_none=True)
            model(chars).sum().backward()

        results[name] = {
            "what": f"{factory.__name__} forward+backward, chars {list(chars.shape)}",
            "real_words": real_words,
            **measure(step, repeats),
        }
    return results


def bench_crf(repeats: int) -> dict[str, dict]:
    import torch

    from seqtag.models.crf.layer import CRF

    torch.manual_seed(0)
    batch, length, num_tags = 32, 40, 17
    crf = CRF(num_tags)
    lengths = torch.randint(length // 2, length + 1, (batch,))
    lengths[0] = length
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    emissions = torch.randn(batch, length, num_tags, requires_grad=True)
    tags = torch.randint(num_tags, (batch, length)).masked_fill(~mask, -100)
    shape = f"emissions [{batch}, {length}, {num_tags}]"
    steps = {
        "crf_train": ("NLL forward+backward", lambda: crf(emissions, tags, mask).backward()),
        "crf_decode": ("Viterbi decode", lambda: crf.decode(emissions, mask)),
        "crf_marginals": ("marginals", lambda: crf.marginals(emissions, mask)),
    }
    return {
        name: {"what": f"CRF {what}, {shape}", **measure(step, repeats)}
        for name, (what, step) in steps.items()
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per measurement")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "micro.json"))
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    measurements = {**bench_chars(args.repeats), **bench_crf(args.repeats)}
    info["load_average_end"] = list(os.getloadavg())
    results = {
        "benchmark": "component micro-benchmarks (random seeded batches)",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "repeats": args.repeats,
        "machine": info,
        "measurements": measurements,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("| measurement | min ms | median ms | what |")
    print("|---|---:|---:|---|")
    for name, row in measurements.items():
        print(f"| {name} | {row['min_ms']:.2f} | {row['median_ms']:.2f} | {row['what']} |")
    print(
        f"threads {info['torch_num_threads']}, torch {info['torch_version']}, "
        f"load {info['load_average'][0]:.2f} -> {info['load_average_end'][0]:.2f}; "
        f"written to {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
