"""Training speed of the character models, against flair's character BiLSTM.

    python benchmarks/char_training.py [--epochs 2] [--flair /work/flairenv/bin/python]

seqtag's softmax BiLSTM (1x256, the shared 100-d vectors, batches of 32 EWT sentences, the
model's defaults otherwise) trains through a plain ``Trainer`` for ``--epochs`` full epochs (the
best counts) with ``char_features`` none, cnn and lstm, each in turn in this process; tokens/s
counts real tokens. With ``--flair``, flair 0.15.1's own ``flair_baseline.py speed --chars
lstm`` (one timed epoch of EWT UPOS through its trainer, with its ``CharacterEmbeddings``: 25-d
characters, 25 units per direction, as seqtag's ``char_features: lstm``) and ``--chars none``
run in flair's environment right after, so the ratios come from one run on one machine and
both sides include their trainer and data loading. Prints a table and writes
``benchmarks/char_training.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from run import DEFAULT_DATA, data_paths, report_missing_data  # noqa: E402
from training_bound import flair_speed_report, trainer_epoch_rates  # noqa: E402


def seqtag_rate(
    char_features: str, paths: dict[str, Path], epochs: int, limit: int | None
) -> float:
    """Best-epoch training tokens/s of one variant through a plain ``Trainer``."""
    import lightning.pytorch as pl

    from seqtag import SequenceTagger, TaggingDataModule

    pl.seed_everything(0, verbose=False)
    data = TaggingDataModule(
        train_path=str(paths["train"]),
        format="conllu",
        batch_size=32,
        vectors=str(paths["vectors"]),
    )
    data.setup("fit")
    model = SequenceTagger(spec=data.spec, hidden_size=256, char_features=char_features)
    return max(trainer_epoch_rates(model, data, epochs, limit))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=2, help="Trainer epochs; the best counts")
    parser.add_argument("--limit-batches", type=int, help="batches per epoch (smoke runs)")
    parser.add_argument("--flair", type=Path, help="python of flair's venv")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "char_training.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if report_missing_data("char_training.py", args.data_root):
        return 2
    paths = data_paths(args.data_root)
    rates = {
        chars: seqtag_rate(chars, paths, args.epochs, args.limit_batches)
        for chars in ("none", "cnn", "lstm")
    }
    result: dict = {
        "epochs": args.epochs,
        "measured_through": "plain Trainer, best epoch",
        "batch_size": 32,
        "seqtag_tokens_per_s": {chars: round(rate) for chars, rate in rates.items()},
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "date": date.today().isoformat(),
        },
    }
    print(f"seqtag training through a Trainer, batch 32, best of {args.epochs} epochs:")
    for chars, rate in rates.items():
        print(f"  chars {chars:5} {rate:10,.0f} tokens/s")
    if args.flair:
        result["flair"] = {}
        for chars in ("none", "lstm"):
            flair = flair_speed_report(args.flair, "softmax", chars)
            result["flair"][chars] = flair
            flair_speed = flair["train_tokens_per_second"]
            print(f"  flair chars {chars:5} {flair_speed:10,.0f} tokens/s")
        flair_lstm = result["flair"]["lstm"]["train_tokens_per_second"]
        flair_none = result["flair"]["none"]["train_tokens_per_second"]
        result["ratios"] = {
            "none_over_flair_none": round(rates["none"] / flair_none, 2),
            "lstm_over_flair_lstm": round(rates["lstm"] / flair_lstm, 2),
            "cnn_over_flair_lstm": round(rates["cnn"] / flair_lstm, 2),
        }
        for name, ratio in result["ratios"].items():
            print(f"  {name}: {ratio}x")
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
