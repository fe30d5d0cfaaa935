"""Training speed of the character models, against flair's character BiLSTM.

    python benchmarks/char_training.py [--steps 150] [--flair /work/flairenv/bin/python]

seqtag's softmax BiLSTM (1x256, the shipped 100-d vectors, batches of 32 EWT sentences, fused
Adam) trains for ``--steps`` steps after 10 warm-up steps with ``char_features`` none, cnn and
lstm, each in turn in this process; tokens/s counts real tokens. With ``--flair``, flair
0.15.1's own ``flair_baseline.py speed --chars lstm`` (one timed epoch of EWT UPOS with its
``CharacterEmbeddings``: 25-d characters, 25 units per direction, as seqtag's
``char_features: lstm``) and ``--chars none`` run in flair's environment right after, so the
ratios come from one run on one machine. Prints a table and writes
``benchmarks/char_training.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "data" / "ud_en_ewt" / "en_ewt-ud-train.conllu.gz"
VECTORS = REPO / "data" / "vectors" / "w2v-en-100d-ewt.bin"


def seqtag_rate(char_features: str, steps: int) -> float:
    """Training tokens/s of one variant over ``steps`` steps (after 10 warm-up steps)."""
    import lightning.pytorch as pl

    from seqtag import SequenceTagger, TaggingDataModule

    pl.seed_everything(0, verbose=False)
    data = TaggingDataModule(
        train_path=str(TRAIN), format="conllu", batch_size=32, vectors=str(VECTORS)
    )
    data.setup("fit")
    model = SequenceTagger(data=data.spec, hidden_size=256, char_features=char_features)
    optimizer = model.configure_optimizers()["optimizer"]
    model.train()
    loader = iter(data.train_dataloader())
    batches = [next(loader) for _ in range(steps + 10)]

    def step(batch: dict) -> None:
        loss = model.tagger.loss(model(batch), batch["tags"], batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for batch in batches[:10]:
        step(batch)
    tokens = 0
    start = time.perf_counter()
    for batch in batches[10:]:
        step(batch)
        tokens += int(batch["mask"].sum())
    return tokens / (time.perf_counter() - start)


def flair_rate(python: Path, chars: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "flair.json"
        command = [str(python), str(REPO / "benchmarks" / "flair_baseline.py"), "speed"]
        command += ["--decoder", "softmax", "--chars", chars, "--json", str(out)]
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        return json.loads(out.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--flair", type=Path, help="python of flair's venv")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "char_training.json")
    args = parser.parse_args()
    rates = {chars: seqtag_rate(chars, args.steps) for chars in ("none", "cnn", "lstm")}
    result: dict = {
        "steps": args.steps,
        "batch_size": 32,
        "seqtag_tokens_per_s": {chars: round(rate) for chars, rate in rates.items()},
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "date": date.today().isoformat(),
        },
    }
    print(f"seqtag training, batch 32, {args.steps} steps:")
    for chars, rate in rates.items():
        print(f"  chars {chars:5} {rate:10,.0f} tokens/s")
    if args.flair:
        result["flair"] = {}
        for chars in ("none", "lstm"):
            flair = flair_rate(args.flair, chars)
            result["flair"][chars] = flair
            flair_speed = _flair_tokens_per_s(flair)
            print(f"  flair chars {chars:5} {flair_speed:10,.0f} tokens/s")
        flair_lstm = _flair_tokens_per_s(result["flair"]["lstm"])
        flair_none = _flair_tokens_per_s(result["flair"]["none"])
        result["ratios"] = {
            "none_over_flair_none": round(rates["none"] / flair_none, 2),
            "lstm_over_flair_lstm": round(rates["lstm"] / flair_lstm, 2),
            "cnn_over_flair_lstm": round(rates["cnn"] / flair_lstm, 2),
        }
        for name, ratio in result["ratios"].items():
            print(f"  {name}: {ratio}x")
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"written to {args.output}")


def _flair_tokens_per_s(report: dict) -> float:
    for key in ("train_tokens_per_second", "training_tokens_per_second", "tokens_per_second"):
        if key in report:
            return float(report[key])
    raise SystemExit(f"no training speed in flair's report: {sorted(report)}")


if __name__ == "__main__":
    main()
