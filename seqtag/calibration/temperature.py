"""Temperature calibration of a trained tagger on its dev set, in memory and in checkpoints.

A tagger's confidences are only worth thresholding if they are calibrated. One scalar ``T``
divides every score (for a CRF the emissions and the transitions together) and is fitted on
the dev set by minimising the negative log-likelihood of the gold tags
(:func:`seqtag.calibration.metrics.fit_temperature`); it is stored in the model
(``Tagger.temperature``, a checkpoint buffer) and never changes the predicted tags.

- :func:`calibrate` fits ``T`` for a model and dev batches and sets it.
- :class:`TemperatureCalibration`, a Lightning callback (``seqtag fit`` adds it; turn it off
  with ``--calibration.enabled false``), does that at the end of training for the model in
  memory and for every checkpoint file the run's ``ModelCheckpoint`` callbacks wrote, each with
  its own weights.
- ``seqtag calibrate`` (:mod:`seqtag.cli.calibrate`) does it later for an existing checkpoint.

Partially annotated dev data: with a CRF, tokens of unknown gold tag (and gold tags unseen in
training) are scored with every tag allowed, so they are marginalised out; a softmax skips them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from seqtag.calibration.metrics import CalibrationError, fit_temperature
from seqtag.calibration.test_time import ECE_BINS, predicted_confidence
from seqtag.checkpoint.plugin import SeqtagCheckpointIO
from seqtag.checkpoint.run_folder import inside_folder
from seqtag.data.batching import EncodedDataset, collate
from seqtag.data.datamodule import TaggingDataModule
from seqtag.data.sampling import LengthBucketSampler
from seqtag.errors import ConfigError, OutputError
from seqtag.models.tagger import Tagger

__all__ = [
    "DevSet",
    "TemperatureCalibration",
    "calibrate",
    "collect_dev_set",
    "full_dev_batches",
    "write_temperature",
]

log = logging.getLogger(__name__)

#: Key of the temperature in a SequenceTagger checkpoint's ``state_dict``.
TEMPERATURE_KEY = "tagger.temperature"


@dataclass
class DevSet:
    """A dev set's scores, kept on the CPU in float32 (EWT dev: 25k tokens x 17 tags, 2 MB):
    one ``(emissions, mask, tags, allowed)`` per batch, ``allowed`` only for a CRF."""

    batches: list[tuple[Tensor, Tensor, Tensor, Tensor | None]]
    tokens: int  # tokens the NLL is averaged over

    def nll(self, tagger: Tagger) -> Any:
        """``nll(T)``: the mean NLL per scored dev token of the gold tags at temperature ``T``,
        differentiable in ``T`` only."""
        device = tagger.emission.weight.device

        def nll(temperature: Tensor) -> Tensor:
            total = torch.zeros((), dtype=torch.float64, device=device)
            for emissions, mask, tags, allowed in self.batches:
                emissions, mask, tags = emissions.to(device), mask.to(device), tags.to(device)
                allowed = allowed.to(device) if allowed is not None else None
                loss = tagger.loss(emissions, tags, mask, allowed, temperature=temperature)
                total = total + loss.double() * _scored(tagger, mask, tags)
            return total / self.tokens

        return nll


def _scored(tagger: Tagger, mask: Tensor, tags: Tensor) -> int:
    """Tokens ``tagger.loss`` averages over in a dev batch (see :meth:`Tagger.loss`)."""
    return int(mask.sum()) if tagger.crf is not None else int((tags >= 0).sum())


def full_dev_batches(datamodule: TaggingDataModule) -> Iterator[dict[str, Any]]:
    """Every dev sentence of a :class:`~seqtag.data.datamodule.TaggingDataModule`, in batches
    of its ``eval_batch_size``, in this process alone (not sharded across DDP processes)."""
    dataset = EncodedDataset(datamodule.encode("val"))
    sampler = LengthBucketSampler(
        dataset.lengths,
        datamodule.hparams.eval_batch_size,
        shuffle=False,
        num_replicas=1,
        rank=0,
    )
    for indices in sampler:
        yield collate([dataset[i] for i in indices])


@torch.no_grad()
def collect_dev_set(model: pl.LightningModule, batches: Iterable[dict[str, Any]]) -> DevSet:
    """Run ``model`` (a SequenceTagger, in eval mode here) over the batches and keep what the
    NLL needs. Gold tags that are unknown or unseen in training: a CRF allows every tag there,
    a softmax ignores them."""
    tagger: Tagger = model.tagger
    device = model.device
    was_training = model.training
    model.eval()
    kept = []
    tokens = 0
    try:
        for batch in batches:
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            emissions = model(batch).float().cpu()
            mask, tags = batch["mask"].cpu(), batch["tags"].cpu()
            allowed = batch.get("allowed")
            allowed = allowed.cpu() if allowed is not None else None
            if tagger.crf is None:
                allowed = None  # cross-entropy ignores unknown and unseen targets (< 0)
            elif allowed is None and bool((tags[mask] < 0).any()):
                allowed = torch.nn.functional.one_hot(tags.clamp(min=0), tagger.num_tags).bool()
                allowed |= (tags < 0).unsqueeze(2)  # unseen gold: any tag, marginalised out
            tokens += _scored(tagger, mask, tags)
            kept.append((emissions, mask, tags, allowed))
    finally:
        model.train(was_training)
    return DevSet(kept, tokens)


@contextlib.contextmanager
def _frozen(module: torch.nn.Module) -> Iterator[None]:
    """No gradients into the weights while ``T`` is fitted (the CRF's transitions are scaled
    by ``T``, so its backward would otherwise reach them)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def fit_dev_temperature(tagger: Tagger, dev: DevSet) -> tuple[float, float, float]:
    """``(T, NLL at T=1, NLL at T)`` for the tagger's current weights; sets nothing."""
    if dev.tokens == 0:
        raise ConfigError("the dev set has no token with a known gold tag to calibrate on")
    nll = dev.nll(tagger)
    with _frozen(tagger):
        temperature = fit_temperature(nll)
        with torch.no_grad():
            before = float(nll(torch.tensor(1.0, dtype=torch.float64)))
            after = float(nll(torch.tensor(temperature, dtype=torch.float64)))
    return temperature, before, after


def token_ece(tagger: Tagger, dev: DevSet, temperature: float | None) -> float:
    """ECE (15 equal-width bins) of the dev set's token confidences at ``temperature``."""
    metric = CalibrationError(ECE_BINS, validate_args=False)
    device = tagger.emission.weight.device
    with torch.no_grad():
        for emissions, mask, tags, _ in dev.batches:
            emissions, mask, tags = emissions.to(device), mask.to(device), tags.to(device)
            predicted = tagger.predict(emissions, mask)
            confidence = predicted_confidence(tagger, emissions, mask, predicted, temperature)
            scored = mask & (tags > -2)  # unknown gold (-2) skipped; unseen (-1) is wrong
            metric.update(confidence[scored].cpu(), (predicted == tags)[scored].cpu())
    return float(metric.compute())


def calibrate(model: pl.LightningModule, batches: Iterable[dict[str, Any]]) -> float:
    """Fit the temperature of a SequenceTagger on dev batches, set it, and return it."""
    dev = collect_dev_set(model, batches)
    temperature, before, after = fit_dev_temperature(model.tagger, dev)
    model.tagger.temperature.fill_(temperature)
    log.info("temperature %.4g: dev NLL per token %.4f -> %.4f", temperature, before, after)
    return temperature


def write_temperature(checkpoint: dict[str, Any], temperature: float, path: str | Path) -> None:
    """Write ``checkpoint`` with ``temperature`` to ``path`` atomically: to a temporary file in
    the same folder, then renamed over ``path``, so a crash leaves the old file or the new one,
    never half of one."""
    state = checkpoint["state_dict"]
    state[TEMPERATURE_KEY] = torch.tensor(float(temperature), dtype=torch.float32)
    try:
        # The writer of every seqtag checkpoint: synced, the usual file mode, renamed into place.
        SeqtagCheckpointIO().save_checkpoint(checkpoint, path)
    except OSError as error:
        raise OutputError(f"{path}: cannot write the calibrated checkpoint: {error}") from error


class TemperatureCalibration(Callback):
    """At the end of ``fit``, calibrate the model's temperature on the dev set.

    The model in memory and every checkpoint file written by this run's ``ModelCheckpoint``
    callbacks (best, top-k and last) get a temperature fitted for their own weights; a file is
    rewritten atomically with only ``state_dict["tagger.temperature"]`` changed. Only ``.ckpt``
    files inside a callback's own ``dirpath`` are rewritten: paths it restored from a checkpoint
    of elsewhere are never the run's (a warning names them). A run without validation data is
    left uncalibrated (said at info level).

    With a :class:`~seqtag.data.datamodule.TaggingDataModule` the whole dev set is used; other
    validation loaders are used as the trainer has them. Under DDP, rank 0 alone fits (on the
    whole dev set, so the result equals a single process's) and writes the files, and sends
    the model's temperature to the other ranks, so every process ends with the same model.

    Args:
        enabled: calibrate; ``False`` leaves the temperature at 1 (the checkpoints as saved).
    """

    def __init__(self, enabled: bool = True) -> None:
        if not isinstance(enabled, bool):
            raise ConfigError(f"calibration.enabled must be true or false, got {enabled!r}")
        self.enabled = enabled
        self.temperature: float | None = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # At the end of training, not of fit: the checkpoints are written, and the processes
        # are still connected (on_fit_end runs after the strategy's teardown; a broadcast
        # there could abort the process at exit).
        if not self.enabled or trainer.fast_dev_run:
            return
        batches = _dev_batches(trainer)
        if batches is None:
            log.info("no validation data: the temperature is not calibrated (stays 1)")
            return
        temperature = None
        if trainer.is_global_zero:
            temperature = self._calibrate_rank_zero(trainer, pl_module, batches)
        temperature = trainer.strategy.broadcast(temperature, src=0)
        self.temperature = temperature
        pl_module.tagger.temperature.fill_(temperature)
        trainer.callback_metrics["temperature"] = torch.tensor(temperature)
        for logger in trainer.loggers:
            logger.log_metrics({"temperature": temperature}, step=trainer.global_step)

    def _calibrate_rank_zero(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batches: Any
    ) -> float:
        original_device = pl_module.device
        pl_module.to(trainer.strategy.root_device)
        try:
            dev = collect_dev_set(pl_module, batches())
            in_memory = {k: v.detach().clone() for k, v in pl_module.tagger.state_dict().items()}
            temperature, before, after = fit_dev_temperature(pl_module.tagger, dev)
            log.info(
                "calibrated the temperature on %d dev tokens: %.4g (dev NLL per token "
                "%.4f -> %.4f)",
                dev.tokens,
                temperature,
                before,
                after,
            )
            fitted = [(in_memory, temperature)]  # weights and their temperature
            for path in _checkpoint_files(trainer):
                _calibrate_file(pl_module, path, fitted, batches)
        finally:
            pl_module.to(original_device)
        return temperature


def _calibrate_file(
    pl_module: pl.LightningModule,
    path: Path,
    fitted: list[tuple[dict[str, Tensor], float]],
    batches: Any,
) -> None:
    """Fit the temperature of a checkpoint file's weights (or reuse that of equal weights
    already fitted) and rewrite the file with it."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "tagger."
    state = checkpoint["state_dict"]
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    weights.pop("temperature", None)
    temperature = next((t for known, t in fitted if _same_weights(known, weights)), None)
    if temperature is None:
        tagger = pl_module.tagger
        in_memory = fitted[0][0]
        try:
            tagger.load_state_dict(weights)  # no temperature in it: 1
            temperature = fit_dev_temperature(tagger, collect_dev_set(pl_module, batches()))[0]
        finally:
            tagger.load_state_dict(in_memory)
        fitted.append((weights, temperature))
    write_temperature(checkpoint, temperature, path)
    log.info("%s: temperature %.4g", path, temperature)


def _same_weights(known: dict[str, Tensor], weights: dict[str, Tensor]) -> bool:
    names = set(known) - {"temperature"}
    return names == set(weights) and all(
        torch.equal(known[k].cpu(), weights[k].to(known[k].dtype).cpu()) for k in names
    )


def _dev_batches(trainer: pl.Trainer) -> Any:
    """A function giving the dev batches to calibrate on, or ``None`` without dev data."""
    datamodule = trainer.datamodule
    if isinstance(datamodule, TaggingDataModule):
        return (lambda: full_dev_batches(datamodule)) if datamodule.has_dev_data else None
    loaders = trainer.val_dataloaders
    if loaders is None:
        return None
    loaders = list(loaders) if isinstance(loaders, list | tuple) else [loaders]
    if not loaders or all(_is_empty(loader) for loader in loaders):
        return None
    return lambda: (batch for loader in loaders for batch in loader)


def _is_empty(loader: Any) -> bool:
    try:
        return len(loader) == 0
    except TypeError:
        return False


def _checkpoint_files(trainer: pl.Trainer) -> list[Path]:
    """The distinct checkpoint files this run's ModelCheckpoint callbacks wrote (links
    resolved, so a ``last.ckpt`` link to ``best.ckpt`` is one file).

    Only ``.ckpt`` files inside the callback's own ``dirpath`` are the run's: paths restored
    from a checkpoint of another run, or an edited one, may name anyone's files, and those are
    never rewritten (a warning names them;
    :class:`seqtag.checkpoint.run_folder.CheckpointFolderGuard`
    normally drops them when the checkpoint is loaded).
    """
    files: dict[str, Path] = {}
    for callback in trainer.checkpoint_callbacks:
        folder = getattr(callback, "dirpath", None)
        extension = getattr(callback, "FILE_EXTENSION", ".ckpt")
        models = getattr(callback, "best_k_models", None)
        paths = [
            getattr(callback, "best_model_path", ""),
            getattr(callback, "last_model_path", ""),
            *(models if isinstance(models, dict) else ()),
        ]
        names = [name for name in paths if isinstance(name, str) and name]
        for name in dict.fromkeys(names):  # best_model_path is in best_k_models too
            if "://" in name:
                continue
            if folder is None or not inside_folder(name, folder, extension):
                log.warning(
                    "%s: not in the run's checkpoint folder %s: not calibrated", name, folder
                )
                continue
            if not os.path.isfile(name):
                continue
            real = os.path.realpath(name)
            files.setdefault(real, Path(real))
    return list(files.values())
