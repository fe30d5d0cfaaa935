"""Evaluation metrics: conlleval-exact chunk F1 for chunking/NER, token accuracy for POS.

Both are torchmetrics ``Metric``s whose states are counts summed across processes, so scores
under DDP equal scores on the whole evaluation set, not an average of per-process scores.

Partially annotated gold (see :mod:`seqtag.data.partial`): tokens whose gold tag is unknown
(``UNKNOWN_TARGET`` among ids, the ``missing_tag`` marker among strings) are not scored; each
metric counts what it skipped (``skipped``; ``skipped_total()`` sums it across processes).
:class:`TokenAccuracy` lives in :mod:`seqtag.metrics.token_accuracy`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchmetrics import Metric

from seqtag.data.batching import UNKNOWN_TARGET
from seqtag.data.schemes import OUTSIDE, TagScheme, get_spans, normalize_scheme, split_tag
from seqtag.metrics.summed import read_summed
from seqtag.metrics.token_accuracy import MISSING_TAG, PAD_TARGET, TokenAccuracy

__all__ = [
    "MISSING_TAG",
    "OTHER_TYPE",
    "PAD_TARGET",
    "SpanF1",
    "TokenAccuracy",
    "format_span_report",
]

OTHER_TYPE = "<other>"
"""Per-type slot for chunk types met at update time that are not in the metric's tag list."""


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    precision = _ratio(correct, predicted)
    recall = _ratio(correct, gold)
    f1 = _ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class SpanF1(Metric):
    """Micro precision/recall/F1 over chunks, conlleval-exact, plus per-type scores.

    Chunks are read by :func:`seqtag.data.schemes.get_spans` (conlleval's rules, ill-formed
    predictions included) and a predicted chunk is correct when a gold chunk has the same type,
    start and end. States are per-type counts (``correct``, ``predicted``, ``gold``, shape
    ``[num_types + 1]``, the last slot being :data:`OTHER_TYPE`) plus token counts, all summed
    across processes.

    A sentence with an unknown gold tag (``None`` or ``missing_tag`` among strings,
    ``UNKNOWN_TARGET`` among ids) is left out of every count and counted in ``skipped``
    (sentences): a gold chunk next to an unknown tag has no known extent, and predicted chunks
    over unknown tags could be neither confirmed nor refuted. Token accuracy still scores its
    known tags.

    Args:
        tags: The tag vocabulary: its types name the per-type rows, and ids given to
            :meth:`update` index into it. Entries in angle brackets (``<pad>``, ``<unk>``) are
            vocabulary markers, and predicting one counts as ``O``; any other entry must be
            ``O`` or a ``B-``/``I-``/``E-``/``S-`` tag.
        scheme: Scheme the scored tags are read in (``iob1``, ``iob2``/``bio``,
            ``bioes``/``iobes``); a scored tag not valid in it raises
            :class:`~seqtag.errors.TagSchemeError`.
        missing_tag: a gold string that means "tag unknown", or ``None`` when every gold
            string is a tag. seqtag's own batches mark unknown gold tags as ``None`` already,
            whatever marker the data uses, and score with ``None``.
        **kwargs: Passed to :class:`torchmetrics.Metric` (for example ``sync_on_compute``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: torch.Tensor
    predicted: torch.Tensor
    gold: torch.Tensor
    tokens: torch.Tensor
    correct_tokens: torch.Tensor
    skipped: torch.Tensor

    def __init__(
        self,
        tags: Sequence[str],
        scheme: TagScheme | str = "iob2",
        missing_tag: str | None = MISSING_TAG,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.scheme: TagScheme = normalize_scheme(scheme)
        self.missing_tag = missing_tag
        self.tags = list(tags)
        self._id_to_tag: list[str] = []
        types: set[str] = set()
        for tag in self.tags:
            if isinstance(tag, str) and len(tag) > 2 and tag[0] == "<" and tag[-1] == ">":
                self._id_to_tag.append(OUTSIDE)
                continue
            # Any scheme's prefixes are accepted here: the list may be the model's tags in
            # another scheme than the one scored (only update_strings is used then); tags are
            # read under ``scheme`` when they are scored.
            type_ = split_tag(tag, "bioes")[1]
            if type_ is not None:
                types.add(type_)
            self._id_to_tag.append(tag)
        self.types = sorted(types)
        self._type_index = {type_: i for i, type_ in enumerate(self.types)}
        self._computed_counts: tuple[dict[str, dict[str, int]], int, int, int] | None = None
        size = len(self.types) + 1
        for name in ("correct", "predicted", "gold"):
            self.add_state(name, default=torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("tokens", "correct_tokens", "skipped"):
            self.add_state(name, default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        preds: torch.Tensor | Sequence[Sequence[str]],
        target: torch.Tensor | Sequence[Sequence[str]],
        mask: torch.Tensor | None = None,
    ) -> None:
        """Count the chunks of a batch.

        Either tag ids: ``preds`` and ``target`` of shape ``[B, T]`` indexing into ``tags``, with
        ``mask`` (bool ``[B, T]``) true on real tokens; or, with ``mask=None``, lists holding one
        list of tag strings per sentence (see :meth:`update_strings`).
        """
        if isinstance(preds, torch.Tensor) or isinstance(target, torch.Tensor):
            pred_sents, gold_sents = self._decode(preds, target, mask)
        else:
            if mask is not None:
                raise ValueError("mask is only used with tag-id tensors, not with tag strings")
            pred_sents, gold_sents = preds, target
        if len(pred_sents) != len(gold_sents):
            raise ValueError(
                f"got {len(pred_sents)} predicted sentences but {len(gold_sents)} gold sentences"
            )
        self._count(pred_sents, gold_sents)

    def update_strings(
        self, preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]
    ) -> None:
        """Count the chunks of sentences given as tag strings (validated against the scheme)."""
        self.update(preds, golds)

    def _decode(
        self, preds: Any, target: Any, mask: torch.Tensor | None
    ) -> tuple[list[list[str]], list[list[str]]]:
        """Turn id tensors into one list of tag strings per sentence, real tokens only."""
        if not (isinstance(preds, torch.Tensor) and isinstance(target, torch.Tensor)):
            raise ValueError("preds and target must both be tensors of tag ids, or both lists")
        if mask is None:
            raise ValueError("mask (bool [B, T], true on real tokens) is required with tag ids")
        if preds.dim() != 2 or preds.shape != target.shape or preds.shape != mask.shape:
            raise ValueError(
                "preds, target and mask must all have shape [B, T], got "
                f"{tuple(preds.shape)}, {tuple(target.shape)} and {tuple(mask.shape)}"
            )
        mask = mask.bool()
        partial = (target.eq(UNKNOWN_TARGET) & mask).any(dim=1)
        if partial.any():
            self.skipped += int(partial.sum())
            preds, target, mask = preds[~partial], target[~partial], mask[~partial]
        for name, ids in (("preds", preds), ("target", target)):
            real = ids[mask]
            if real.numel() and (real.min() < 0 or real.max() >= len(self.tags)):
                raise ValueError(
                    f"{name} holds tag ids outside [0, {len(self.tags)}) at unmasked positions"
                )
        id_to_tag = self._id_to_tag
        pred_sents: list[list[str]] = []
        gold_sents: list[list[str]] = []
        for pred_row, gold_row, mask_row in zip(
            preds.tolist(), target.tolist(), mask.tolist(), strict=True
        ):
            keep = [j for j, real in enumerate(mask_row) if real]
            pred_sents.append([id_to_tag[pred_row[j]] for j in keep])
            gold_sents.append([id_to_tag[gold_row[j]] for j in keep])
        return pred_sents, gold_sents

    def _count(
        self, pred_sents: Sequence[Sequence[str]], gold_sents: Sequence[Sequence[str]]
    ) -> None:
        size = len(self.types) + 1
        correct, predicted, gold = [0] * size, [0] * size, [0] * size
        other = size - 1
        index = self._type_index
        tokens = correct_tokens = skipped = 0
        for pred_tags, gold_tags in zip(pred_sents, gold_sents, strict=True):
            if len(pred_tags) != len(gold_tags):
                raise ValueError(
                    f"a predicted sentence has {len(pred_tags)} tags but its gold sentence has "
                    f"{len(gold_tags)}"
                )
            if None in gold_tags or (
                self.missing_tag is not None and self.missing_tag in gold_tags
            ):
                skipped += 1
                continue
            gold_spans = get_spans(gold_tags, self.scheme)
            pred_spans = get_spans(pred_tags, self.scheme)
            gold_set = set(gold_spans)
            for span in gold_spans:
                gold[index.get(span[0], other)] += 1
            for span in pred_spans:
                slot = index.get(span[0], other)
                predicted[slot] += 1
                if span in gold_set:
                    correct[slot] += 1
            tokens += len(gold_tags)
            correct_tokens += sum(p == g for p, g in zip(pred_tags, gold_tags, strict=True))
        device = self.correct.device
        self.correct += torch.tensor(correct, dtype=torch.long, device=device)
        self.predicted += torch.tensor(predicted, dtype=torch.long, device=device)
        self.gold += torch.tensor(gold, dtype=torch.long, device=device)
        self.tokens += tokens
        self.correct_tokens += correct_tokens
        self.skipped += skipped

    def compute(self) -> dict[str, torch.Tensor]:
        """Micro ``precision``, ``recall`` and ``f1`` as float64 scalars (0 when undefined)."""
        # States are summed over processes here; keep them so that per_type() and the report
        # can run on one rank afterwards without a collective call that would hang.
        self._computed_counts = self._read_counts()
        scores = _prf(int(self.correct.sum()), int(self.predicted.sum()), int(self.gold.sum()))
        return {
            name: torch.tensor(value, dtype=torch.float64, device=self.correct.device)
            for name, value in zip(("precision", "recall", "f1"), scores, strict=True)
        }

    def _read_counts(self) -> tuple[dict[str, dict[str, int]], int, int, int]:
        columns = (self.correct.tolist(), self.predicted.tolist(), self.gold.tolist())
        rows = {
            type_: {"correct": c, "predicted": p, "gold": g}
            for type_, c, p, g in zip([*self.types, OTHER_TYPE], *columns, strict=True)
        }
        if not any(rows[OTHER_TYPE].values()):
            del rows[OTHER_TYPE]
        return rows, int(self.tokens), int(self.correct_tokens), int(self.skipped)

    def _gathered(self) -> tuple[dict[str, dict[str, int]], int, int, int]:
        """Per-type counts, token, correct-token and skipped-sentence counts, summed across
        processes.

        Right after :meth:`compute` (nothing updated since) these are the counts it saw;
        otherwise the states are synchronised here, which every process must then join.
        """
        return read_summed(self, self._computed_counts, self._read_counts)

    def per_type(self) -> dict[str, dict[str, float]]:
        """Per-type ``precision``, ``recall``, ``f1``, ``support`` (gold chunks), ``predicted``
        and ``correct``, summed across processes like :meth:`compute`.

        Under DDP, call it after :meth:`compute` on every rank (as Lightning does when logging)
        to use it on one rank only; otherwise every rank must call it.

        Every type of the tag list is present, with zeros when never seen; an
        :data:`OTHER_TYPE` row appears only when some chunk had a type missing from the list.
        """
        rows, _, _, _ = self._gathered()
        return {type_: _row(**counts) for type_, counts in rows.items()}

    def skipped_total(self) -> int:
        """Sentences left out for an unknown gold tag, summed across processes (under DDP,
        as for :meth:`per_type`)."""
        return self._gathered()[3]


def _row(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision, recall, f1 = _prf(correct, predicted, gold)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": gold,
        "predicted": predicted,
        "correct": correct,
    }


def format_span_report(
    metric_or_per_type: SpanF1 | Mapping[str, Mapping[str, float]], digits: int = 2
) -> str:
    """A conlleval-like text table: one row per type and an ``overall`` micro row, in percent.

    Given a :class:`SpanF1`, the table is preceded by conlleval's summary lines (tokens and
    phrases processed, token accuracy); under DDP, as for :meth:`SpanF1.per_type`, call
    ``compute()`` on every rank first to print on one rank. Given the output of
    :meth:`SpanF1.per_type`, the overall row is recomputed from its counts.
    """
    lines: list[str] = []
    if isinstance(metric_or_per_type, SpanF1):
        rows, tokens, correct_tokens, skipped = metric_or_per_type._gathered()
        per_type: Mapping[str, Mapping[str, float]] = {
            type_: _row(**counts) for type_, counts in rows.items()
        }
        lines.append(
            f"processed {tokens} tokens with {sum(r['gold'] for r in rows.values())} phrases; "
            f"found: {sum(r['predicted'] for r in rows.values())} phrases; "
            f"correct: {sum(r['correct'] for r in rows.values())}."
        )
        if tokens:
            lines.append(f"accuracy: {100 * correct_tokens / tokens:.{digits}f}%")
        if skipped:
            lines.append(f"skipped: {skipped} sentences with unknown gold tags (not scored).")
    else:
        per_type = metric_or_per_type

    def total(key: str) -> int:
        if key == "correct":  # absent from hand-made rows: recover it from recall and support
            return sum(
                int(row.get("correct", round(row["recall"] * row["support"])))
                for row in per_type.values()
            )
        return int(sum(row[key] for row in per_type.values()))

    overall = _row(total("correct"), total("predicted"), total("support"))
    names = [*per_type, "overall"]
    name_width = max(len(name) for name in names)
    number_width = max(len("precision"), digits + 5)
    header = f"{'type':<{name_width}}" + "".join(
        f"  {title:>{number_width}}"
        for title in ("precision", "recall", "f1", "support", "predicted")
    )
    lines.append(header)
    for name, row in [*per_type.items(), ("overall", overall)]:
        percents = "".join(
            f"  {100 * row[key]:>{number_width}.{digits}f}" for key in ("precision", "recall", "f1")
        )
        totals = "".join(f"  {int(row[key]):>{number_width}d}" for key in ("support", "predicted"))
        lines.append(f"{name:<{name_width}}{percents}{totals}")
    return "\n".join(lines)
