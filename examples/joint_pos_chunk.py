"""Joint POS tagging and chunking: seqtag's building blocks inside your own LightningModule.

One shared :class:`seqtag.BiRNNEncoder` feeds two heads: a softmax over POS tags and a
:class:`seqtag.CRF` over chunk tags (constrained to well-formed IOB2). Data comes from
CoNLL-2000, whose columns are ``token POS chunk``; it is read twice with
:func:`seqtag.data.io.formats.read_columns` (tag column 1, then 2). Scores come from
:class:`seqtag.TokenAccuracy` (POS) and :class:`seqtag.SpanF1` (chunks, conlleval-exact).

Everything else (the vocabularies, batching, the training loop) is ordinary user code, to show
that seqtag's pieces need neither its CLI nor its own LightningModule::

    python examples/joint_pos_chunk.py --max-sentences 2000 --epochs 3

CoNLL-2000 is research-use data: the script reads it in place from ``--data-dir`` (default
``../shared/data/conll2000`` next to the repository) and never copies it.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from seqtag import CRF, BiRNNEncoder, SpanF1, TokenAccuracy, Vocabulary
from seqtag.data.io.formats import read_columns
from seqtag.data.sampling import LengthBucketSampler
from seqtag.data.schemes import allowed_transitions

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "conll2000"
IGNORE = -100  # padding target of the POS loss and of TokenAccuracy


@dataclass(frozen=True)
class Example:
    tokens: tuple[str, ...]
    pos: tuple[str, ...]
    chunks: tuple[str, ...]


def read_conll2000(path: Path, limit: int | None) -> list[Example]:
    """Tokens with their POS (column 1) and chunk (column 2) tags, the first ``limit`` only."""
    pos = read_columns(path, token_column=0, tag_column=1)
    chunks = read_columns(path, token_column=0, tag_column=2)
    examples = [
        Example(p.tokens, p.tags, c.tags) for p, c in zip(pos, chunks, strict=True)
    ]  # the same file read twice: sentences and tokens line up
    return examples[:limit] if limit else examples


@dataclass(frozen=True)
class Vocabs:
    words: Vocabulary
    pos: Vocabulary
    chunks: Vocabulary

    @classmethod
    def build(cls, train: Sequence[Example]) -> Vocabs:
        return cls(
            # fallback: unseen "Rates"/"1987" find "rates"/"0000"-style rows if present
            words=Vocabulary.from_counts(
                Counter(t for e in train for t in e.tokens), fallback=True
            ),
            pos=Vocabulary(sorted({t for e in train for t in e.pos}), pad=None, unk=None),
            chunks=Vocabulary(sorted({t for e in train for t in e.chunks}), pad=None, unk=None),
        )


class EncodedCorpus(torch.utils.data.Dataset):
    """Sentences as id arrays; indexed by a list of positions (a batch from the sampler)."""

    def __init__(self, examples: Sequence[Example], vocabs: Vocabs) -> None:
        self.examples = list(examples)
        self.words = [torch.tensor(vocabs.words.encode(e.tokens)) for e in examples]
        # Gold tags never seen in training: -1 for POS (TokenAccuracy counts it wrong); the
        # chunk metric scores gold strings, so unseen chunk tags stay exact there.
        pos_id = {t: i for i, t in enumerate(vocabs.pos)}
        chunk_id = {t: i for i, t in enumerate(vocabs.chunks)}
        self.pos = [torch.tensor([pos_id.get(t, -1) for t in e.pos]) for e in examples]
        self.chunks = [torch.tensor([chunk_id.get(t, 0) for t in e.chunks]) for e in examples]
        self.pad_id = vocabs.words.pad_id

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, positions: list[int]) -> dict[str, object]:
        lengths = torch.tensor([len(self.words[i]) for i in positions])
        size, longest = len(positions), int(lengths.max())
        words = torch.full((size, longest), self.pad_id, dtype=torch.long)
        pos = torch.full((size, longest), IGNORE, dtype=torch.long)
        chunks = torch.zeros((size, longest), dtype=torch.long)
        for row, i in enumerate(positions):
            n = len(self.words[i])
            words[row, :n] = self.words[i]
            pos[row, :n] = self.pos[i]
            chunks[row, :n] = self.chunks[i]
        return {
            "words": words,
            "lengths": lengths,
            "mask": torch.arange(longest)[None, :] < lengths[:, None],
            "pos": pos,
            "chunks": chunks,
            "gold_chunks": [self.examples[i].chunks for i in positions],
        }


def loader(dataset: EncodedCorpus, batch_size: int, shuffle: bool) -> DataLoader:
    """Length-bucketed batches (seqtag's sampler: little padding, DDP-aware)."""
    lengths = [len(w) for w in dataset.words]
    sampler = LengthBucketSampler(lengths, batch_size, shuffle=shuffle)
    return DataLoader(dataset, sampler=sampler, batch_size=None)


class JointTagger(pl.LightningModule):
    """A shared BiRNN encoder with a POS softmax head and a chunk CRF head."""

    def __init__(
        self,
        vocabs: Vocabs,
        word_counts: Tensor,
        embedding_dim: int = 64,
        hidden_size: int = 64,
        dropout: float = 0.3,
        lr: float = 1e-2,
        chunk_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["vocabs", "word_counts"])
        self.vocabs = vocabs
        self.encoder = BiRNNEncoder(
            len(vocabs.words),
            embedding_dim,
            hidden_size=hidden_size,
            dropout=dropout,
            pad_id=vocabs.words.pad_id,
            unk_id=vocabs.words.unk_id,
        )
        # Rare training words stand in for unknown ones (see BiRNNEncoder.set_rare_word_dropout).
        self.encoder.set_rare_word_dropout(word_counts, alpha=0.25)
        self.pos_head = nn.Linear(self.encoder.output_dim, len(vocabs.pos))
        self.chunk_head = nn.Linear(self.encoder.output_dim, len(vocabs.chunks))
        self.crf = CRF(len(vocabs.chunks))
        self.crf.set_constraints(*allowed_transitions(list(vocabs.chunks), "iob2"))
        self.pos_accuracy = TokenAccuracy(ignore_index=IGNORE)
        self.chunk_f1 = SpanF1(list(vocabs.chunks), "iob2")

    def forward(self, batch: dict) -> tuple[Tensor, Tensor]:
        features = self.encoder(batch["words"], batch["lengths"])  # [B, T, 2H], shared
        return self.pos_head(features), self.chunk_head(features)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        pos_scores, chunk_scores = self(batch)
        pos_loss = F.cross_entropy(
            pos_scores.flatten(0, 1), batch["pos"].flatten(), ignore_index=IGNORE
        )
        chunk_loss = self.crf(chunk_scores, batch["chunks"], batch["mask"], reduction="token_mean")
        loss = pos_loss + self.hparams.chunk_weight * chunk_loss
        size = len(batch["lengths"])
        self.log_dict({"pos_loss": pos_loss, "chunk_loss": chunk_loss}, batch_size=size)
        return loss

    def test_step(self, batch: dict, batch_idx: int) -> None:
        pos_scores, chunk_scores = self(batch)
        self.pos_accuracy.update(pos_scores.argmax(dim=-1), batch["pos"])
        best = self.crf.decode(chunk_scores, batch["mask"]).tolist()  # Viterbi, [B, T]
        rows = zip(best, batch["lengths"].tolist(), strict=True)
        predicted = [self.vocabs.chunks.decode(row[:n]) for row, n in rows]
        self.chunk_f1.update_strings(predicted, batch["gold_chunks"])

    def on_test_epoch_end(self) -> None:
        self.log("pos_acc", self.pos_accuracy.compute().float())
        self.log("chunk_f1", self.chunk_f1.compute()["f1"].float())
        self.pos_accuracy.reset()
        self.chunk_f1.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--max-sentences", type=int, default=2000, help="training sentences")
    parser.add_argument("--test-sentences", type=int, default=0, help="0: the whole test file")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    pl.seed_everything(args.seed, verbose=False)
    started = time.perf_counter()
    train = read_conll2000(args.data_dir / "train.txt", args.max_sentences)
    test = read_conll2000(args.data_dir / "test.txt", args.test_sentences)
    vocabs = Vocabs.build(train)
    counts = Counter(t for e in train for t in e.tokens)
    word_counts = torch.tensor([float(counts.get(w, 0)) for w in vocabs.words])
    print(
        f"train {len(train)} sentences, test {len(test)}; {len(vocabs.words)} words, "
        f"{len(vocabs.pos)} POS tags, {len(vocabs.chunks)} chunk tags"
    )

    model = JointTagger(vocabs, word_counts, hidden_size=args.hidden_size, lr=args.lr)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train_loader = loader(EncodedCorpus(train, vocabs), args.batch_size, shuffle=True)
    test_loader = loader(EncodedCorpus(test, vocabs), 256, shuffle=False)
    trainer.fit(model, train_dataloaders=train_loader)
    (scores,) = trainer.test(model, dataloaders=test_loader, verbose=False)
    print(f"POS accuracy: {scores['pos_acc']:.4f}")
    print(f"chunk F1: {scores['chunk_f1']:.4f}")
    print(f"time: {time.perf_counter() - started:.1f}s")
    return scores


if __name__ == "__main__":
    main()
