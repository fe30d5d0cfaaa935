"""What :class:`~seqtag.training.module.SequenceTagger` measures in validation and test.

Kept out of the module so that it stays a thin system. Per stage: the loss (from partial gold
too: ``allowed`` when the batch has unknown tags), token accuracy, span F1 for span tasks, and
how many tokens (and, for span tasks, sentences) were skipped because their gold tag is
unknown. In test also the tag confusion and calibration: the expected calibration error (ECE,
15 equal-width bins, see :mod:`seqtag.calibration.metrics`) of token confidences and, for span
tasks,
of span confidences, with the model's temperature (``test_ece``, ``test_span_ece``) and
without it (``..._uncalibrated``, temperature 1).

Confidences scored:

- token: the probability of the predicted tag (softmax output, or with a CRF the posterior
  marginal of the Viterbi tag at that position); correct when it equals the gold tag in the
  training scheme. Tokens with an unknown gold tag are skipped; a gold tag unseen in training
  is always wrong.
- span: each chunk of the predicted (Viterbi) path, read in the training scheme, with the
  probability that the tags contain exactly that chunk (exact CRF marginal, or the softmax
  approximation of :func:`~seqtag.models.crf.spans.softmax_span_confidence`); correct when the
  gold (corpus-scheme) tags have a chunk of the same start, end and type. Converting between
  schemes keeps the chunks, so these are the chunks that span F1 scores. Sentences with an
  unknown gold tag are skipped, as span F1 skips them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from torchmetrics.classification import MulticlassConfusionMatrix

from seqtag.calibration.test_time import TestCalibration
from seqtag.metrics.span_f1 import SpanF1, TokenAccuracy, format_span_report
from seqtag.models.tagger import Tagger

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from seqtag.training.module import SequenceTagger

__all__ = [
    "build_metrics",
    "end_epoch",
    "evaluate_batch",
    "loss_tokens",
    "metric_direction",
    "start_epoch",
]

#: What Lightning appends to a metric's name for each of several evaluation dataloaders.
LOADER_SUFFIX = "/dataloader_idx_{}"
#: The measures seqtag logs per stage (``val_loss``, ``test_ece``...), by the way they improve.
LOWER_IS_BETTER = ("loss", "ece", "ece_uncalibrated", "span_ece", "span_ece_uncalibrated")
HIGHER_IS_BETTER = ("acc", "precision", "recall", "f1")


def metric_direction(name: str) -> Literal["min", "max"] | None:
    """``min`` or ``max``: how a metric seqtag logs improves (``val_acc/dataloader_idx_1``
    like ``val_acc``); ``None`` for the skipped counts and for names seqtag does not log."""
    stage, _, measure = name.split("/dataloader_idx_")[0].partition("_")
    if stage not in ("train", "val", "test"):
        return None
    if measure in LOWER_IS_BETTER:
        return "min"
    return "max" if measure in HIGHER_IS_BETTER else None


def _names(stage: str, loader: int) -> dict[str, str]:
    """The module attributes holding one evaluation dataloader's metrics (the first loader's
    are the names of a single loader: ``val_acc``, ``test_spans``, ``test_calibration``)."""
    tail = f"_dataloader_{loader}" if loader else ""
    return {key: f"{stage}_{key}{tail}" for key in ("acc", "spans", "calibration")}


def _add_loader_metrics(module: SequenceTagger, stage: str, loader: int) -> None:
    vocab = module.vocabularies
    names = _names(stage, loader)
    setattr(module, names["acc"], TokenAccuracy(missing_tag=None))  # batches mark them None
    spans = (
        SpanF1(list(vocab.tags), vocab.corpus_scheme, missing_tag=None)
        if vocab.corpus_scheme
        else None
    )
    setattr(module, names["spans"], spans)
    if stage == "test":
        calibration = TestCalibration(vocab.tags, vocab.tag_scheme, vocab.corpus_scheme)
        setattr(module, names["calibration"], calibration)


def build_metrics(module: SequenceTagger) -> None:
    """Create the validation and test metrics for the module's vocabularies (those of a
    second or later evaluation dataloader are made when its first batch comes)."""
    for name, _ in list(module.named_children()):
        if name.startswith(("val_", "test_")) and "_dataloader_" in name:
            delattr(module, name)  # made for other vocabularies
    for stage in ("val", "test"):
        _add_loader_metrics(module, stage, 0)
    # Tag-level confusion on the test set (training-scheme tags, every test dataloader), for
    # ConfusionMatrixPlot.
    module.test_confusion = MulticlassConfusionMatrix(num_classes=len(module.vocabularies.tags))


def _loader_metrics(
    module: SequenceTagger, stage: str, loader: int
) -> tuple[TokenAccuracy, SpanF1 | None, TestCalibration | None]:
    """A dataloader's accuracy, span F1 (span tasks) and calibration (test), made if new."""
    names = _names(stage, loader)
    if not hasattr(module, names["acc"]):
        _add_loader_metrics(module, stage, loader)
        for name in names.values():
            metric = getattr(module, name, None)
            if metric is not None:
                metric.to(module.device)
        _prepare(module, stage, loader)
    return (
        getattr(module, names["acc"]),
        getattr(module, names["spans"]),
        getattr(module, names["calibration"], None),
    )


def _prepare(module: SequenceTagger, stage: str, loader: int) -> None:
    """Restart a dataloader's calibration (unknown gold tags need no setting: batches carry
    them as ``None``, see :func:`seqtag.data.partial.gold_strings`)."""
    names = _names(stage, loader)
    calibration = getattr(module, names["calibration"], None)
    if calibration is not None:
        calibration.start(module.tagger)


def start_epoch(module: SequenceTagger, stage: str) -> None:
    """Prepare every dataloader's metrics made so far; reset the test-only states."""
    loader = 0
    while hasattr(module, _names(stage, loader)["acc"]):
        _prepare(module, stage, loader)
        loader += 1
    #: Evaluation dataloaders of several whose epoch scores are not logged yet.
    module.unscored_loaders = set()
    if stage == "test":
        module.test_confusion.reset()  # counts of one test run only


def loss_tokens(tagger: Tagger, batch: dict[str, Any]) -> int:
    """How many tokens ``tagger.loss`` averages over for this batch (at least 1), so that the
    epoch's logged loss is the mean per token whatever the batching."""
    if tagger.crf is not None:
        scored = batch["mask"]
    elif batch.get("allowed") is not None:
        scored = batch["mask"] & ~batch["allowed"].all(dim=2)
    else:
        scored = batch["tags"] >= 0
    return max(int(scored.sum()), 1)


def evaluate_batch(
    module: SequenceTagger,
    batch: dict[str, Any],
    stage: str,
    batch_idx: int = 0,
    loader: int | None = None,
) -> None:
    """Loss and metrics of one validation or test batch.

    ``loader`` is the dataloader's index when there are several (Lightning passes
    ``dataloader_idx`` then, and names what is logged in a step ``val_acc/dataloader_idx_1``);
    each has its own metrics, whose epoch scores (span F1, skipped counts, calibration) are
    logged at its last batch, so that Lightning files them under that dataloader too.
    """
    tagger = module.tagger
    accuracy, spans, calibration = _loader_metrics(module, stage, loader or 0)
    emissions = module(batch)
    size = len(batch["lengths"])
    loss = tagger.loss(emissions, batch["tags"], batch["mask"], allowed=batch.get("allowed"))
    module.log(f"{stage}_loss", loss, sync_dist=True, batch_size=loss_tokens(tagger, batch))
    predicted = tagger.predict(emissions, batch["mask"])
    if spans is None:
        accuracy.update(predicted, batch["tags"])
    else:
        # Span tasks: every score in the corpus's own scheme, as the gold file has it.
        corpus_tags = module.to_corpus_tags(predicted, batch["lengths"])
        accuracy.update_strings(corpus_tags, batch["gold"])
        spans.update_strings(corpus_tags, batch["gold"])
    attribute = _names(stage, loader or 0)["acc"]
    module.log(f"{stage}_acc", accuracy, prog_bar=True, batch_size=size, metric_attribute=attribute)
    if stage == "test":
        known = batch["tags"] >= 0
        module.test_confusion.update(predicted[known], batch["tags"][known])
        calibration.update(tagger, emissions, batch, predicted)
    if loader is None:
        return
    unscored = getattr(module, "unscored_loaders", None)
    if unscored is None:  # a step called outside Lightning's epoch hooks
        unscored = module.unscored_loaders = set()
    unscored.add(loader)
    if batch_idx + 1 == _batches(module.trainer, stage)[loader]:
        _log_scores(module, stage, loader, several=True)
        unscored.discard(loader)


def _batches(trainer: pl.Trainer, stage: str) -> list[int | float]:
    """Batches each evaluation dataloader runs in this loop (``inf`` when unknown)."""
    if stage == "test":
        return trainer.num_test_batches
    return trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches


def end_epoch(module: SequenceTagger, stage: str) -> None:
    """Log span scores, skipped counts and (test) calibration; ``seqtag test`` prints them.

    With several dataloaders, only those whose last batch was not known in advance are left,
    their names suffixed here as Lightning suffixes the others'.
    """
    unscored = getattr(module, "unscored_loaders", set())
    if not unscored and not _several(module, stage):
        _log_scores(module, stage, 0, several=False)
    for loader in sorted(unscored):
        _log_scores(module, stage, loader, several=True, suffix=LOADER_SUFFIX.format(loader))
    module.unscored_loaders = set()


def _several(module: SequenceTagger, stage: str) -> bool:
    """Whether this loop runs several dataloaders."""
    return len(_batches(module.trainer, stage)) > 1


def _log_scores(
    module: SequenceTagger, stage: str, loader: int, *, several: bool, suffix: str = ""
) -> None:
    """One dataloader's span scores, skipped counts and (test) calibration: logged, printed
    by ``seqtag test``, and reset. Every process calls it (the counts are summed across)."""
    accuracy, spans, calibration = _loader_metrics(module, stage, loader)
    printing = stage == "test" and module.trainer.is_global_zero
    if printing and several:
        print(f"dataloader {loader}:")

    def log(name: str, value: Any, prog_bar: bool = False) -> None:
        # sync_dist averages equal values (no change); without it Lightning warns under DDP.
        # In a step (several dataloaders) Lightning appends the dataloader to the name.
        module.log(
            f"{stage}_{name}{suffix}",
            value,
            prog_bar=prog_bar,
            sync_dist=True,
            batch_size=1,
            add_dataloader_idx=not suffix,
        )

    skipped_sentences = 0
    if spans is not None:
        scores = spans.compute()  # counts summed across processes: the same on every rank
        for name in ("precision", "recall", "f1"):
            log(name, scores[name].float(), prog_bar=name == "f1")
        skipped_sentences = spans.skipped_total()
        log("skipped_sentences", float(skipped_sentences))
        if printing:
            print(format_span_report(spans))
        spans.reset()
    skipped_tokens = accuracy.skipped_total()  # every rank calls it
    log("skipped_tokens", float(skipped_tokens))
    if printing and skipped_tokens:
        sentences = f" ({skipped_sentences} sentences left out of span F1)" if spans else ""
        print(f"skipped: {skipped_tokens} tokens with unknown gold tags, not scored{sentences}")
    if calibration is not None:
        for name, value in calibration.compute().items():
            log(name, value)
        if printing:
            print(calibration.report(float(module.tagger.temperature)))
