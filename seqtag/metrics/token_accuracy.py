"""Token accuracy, summed across processes; unknown gold tags are skipped and counted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from seqtag.data.batching import UNKNOWN_TARGET
from seqtag.metrics.summed import read_summed

PAD_TARGET = -100
"""Default ignored target: the padding id of :mod:`seqtag.data.batching` (and of PyTorch losses)."""

MISSING_TAG = "_"
"""Default gold marker of an unknown tag: the DataModule's default ``missing_tag``."""


class TokenAccuracy(Metric):
    """Share of real tokens whose tag is predicted right, summed across processes.

    Targets equal to ``ignore_index`` (padding) are skipped. Tokens whose gold tag is unknown
    (``UNKNOWN_TARGET``, -2; in :meth:`update_strings`, gold tags that are ``None`` or equal
    to ``missing_tag``) are skipped too, and counted in ``skipped``. Any other target that is
    not a tag id, such as ``UNSEEN_TARGET`` (-1) for a gold tag never seen in training, is a
    real token that no prediction can match, so it counts as wrong, as in conlleval.

    Args:
        ignore_index: the padding target.
        missing_tag: a gold string that means "tag unknown" in :meth:`update_strings`, or
            ``None`` when every gold string is a tag. seqtag's own batches mark unknown gold
            tags as ``None`` already, whatever marker the data uses, and score with ``None``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: torch.Tensor
    total: torch.Tensor
    skipped: torch.Tensor

    def __init__(
        self, ignore_index: int = PAD_TARGET, missing_tag: str | None = MISSING_TAG, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.missing_tag = missing_tag
        self._computed_skipped: int | None = None
        for name in ("correct", "total", "skipped"):
            self.add_state(name, default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Any, target: Any) -> None:
        """Count a batch: ``preds`` and ``target`` are tag ids of one shape (e.g. ``[B, T]``),
        or lists of tag strings per sentence (see :meth:`update_strings`)."""
        if not isinstance(target, torch.Tensor):
            self._count_strings(preds, target)
            return
        if preds.shape != target.shape:
            raise ValueError(
                f"preds and target must have the same shape, got {tuple(preds.shape)} "
                f"and {tuple(target.shape)}"
            )
        unknown = target == UNKNOWN_TARGET
        real = (target != self.ignore_index) & ~unknown
        self.correct += (preds.eq(target) & real).sum()
        self.total += real.sum()
        self.skipped += unknown.sum()

    def update_strings(
        self, preds: Sequence[Sequence[str]], target: Sequence[Sequence[str]]
    ) -> None:
        """Count a batch of tag strings, sentence by sentence (span tasks score these in the
        corpus's own scheme, the one the gold file is written in); unknown gold tags
        (``None``, or equal to ``missing_tag``) are skipped and counted."""
        self.update(preds, target)

    def _count_strings(
        self, preds: Sequence[Sequence[str]], target: Sequence[Sequence[str]]
    ) -> None:
        correct = total = skipped = 0
        marker = self.missing_tag
        for predicted, gold in zip(preds, target, strict=True):
            if len(predicted) != len(gold):
                raise ValueError(
                    f"a predicted sentence has {len(predicted)} tags for {len(gold)} gold tags"
                )
            unknown = sum(g is None or g == marker for g in gold)
            correct += sum(
                p == g and g is not None and g != marker
                for p, g in zip(predicted, gold, strict=True)
            )
            total += len(gold) - unknown
            skipped += unknown
        self.correct += correct
        self.total += total
        self.skipped += skipped

    def compute(self) -> torch.Tensor:
        """Accuracy as a float64 scalar in [0, 1]; 0 when no token was seen."""
        self._computed_skipped = int(self.skipped)  # summed across processes here
        return self.correct.double() / self.total.clamp(min=1)

    def skipped_total(self) -> int:
        """Tokens skipped for an unknown gold tag, summed across processes.

        Right after :meth:`compute` (nothing updated since) it is the count compute saw, so
        under DDP one rank may call it alone; otherwise the states are synchronised here,
        which every process must then join.
        """
        return read_summed(self, self._computed_skipped, lambda: int(self.skipped))
