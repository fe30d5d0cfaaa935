"""What the corpus cache costs a training step: the training loader alone, in memory and cached.

    python benchmarks/corpus_loader.py [--repeats 3] [--output benchmarks/corpus_loader.json]

Builds the quick start's ``TaggingDataModule`` (``configs/ud_ewt_upos.yaml``'s data section:
EWT train with character features' ids) twice, reading into memory and with
``corpus_cache=True`` (a fresh ``SEQTAG_CACHE_DIR`` in a temporary folder, built before timing),
and times a whole epoch of the training loader (sampling, reading the sentences, collating),
best of ``--repeats``. The two loaders give identical batches (checked here, batch by batch),
so the difference is what the cache adds to every step; set it against a training step (about
70 ms for a batch of 32 on 2 cores, ``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "ud_ewt_upos.yaml"


def data_module(cached: bool):
    from seqtag import TaggingDataModule

    settings = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["data"]
    settings.update(val_path=None, test_path=None, corpus_cache=cached)
    return TaggingDataModule(**settings)


def epoch(loader) -> tuple[float, list[torch.Tensor]]:
    start = time.perf_counter()
    batches = [batch["words"] for batch in loader]
    return time.perf_counter() - start, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "corpus_loader.json")
    args = parser.parse_args()
    os.chdir(REPO)  # the config's paths are relative to the repository
    results = {
        "command": "python benchmarks/corpus_loader.py",
        "torch_threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SEQTAG_CACHE_DIR"] = cache
        loaders, reference = {}, None
        for name, cached in (("memory", False), ("cache", True)):
            dm = data_module(cached)
            dm.prepare_data()
            dm.setup("fit")
            dm.encode_with(dm.spec.vocabularies)
            loaders[name] = dm.train_dataloader()
        for name, loader in loaders.items():
            times = []
            for _ in range(args.repeats):
                seconds, batches = epoch(loader)
                times.append(seconds)
            if reference is None:
                reference = batches
            identical = len(batches) == len(reference) and all(
                torch.equal(a, b) for a, b in zip(batches, reference, strict=True)
            )
            best = min(times)
            results[name] = {
                "batches": len(batches),
                "epoch_seconds": times,
                "ms_per_batch": 1000 * best / len(batches),
                "same_batches_as_memory": identical,
            }
            print(
                f"{name:>6}: {len(batches)} batches, {1000 * best / len(batches):.3f} ms a batch "
                f"(best of {args.repeats}), same batches as in memory: {identical}"
            )
    extra = results["cache"]["ms_per_batch"] - results["memory"]["ms_per_batch"]
    results["cache_extra_ms_per_batch"] = extra
    print(f"the cache adds {extra:.3f} ms a batch")
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
