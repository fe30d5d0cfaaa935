"""The ``seqtag`` command: Lightning's CLI with seqtag's defaults and one-line errors."""

from __future__ import annotations

import logging
import os
import sys
from types import MethodType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import (
    LightningArgumentParser,
    LightningCLI,
    LRSchedulerTypeTuple,
    instantiate_class,
)
from torch.optim import Optimizer

from seqtag.callbacks import PredictionWriter
from seqtag.data.datamodule import TaggingDataModule
from seqtag.errors import SeqtagError
from seqtag.module import SequenceTagger


class SeqtagCLI(LightningCLI):
    """Adds a checkpoint callback (``checkpoint.*``) and the prediction writer (``prediction.*``).

    Vocabulary sizes, the tag set and the embedding width are not arguments: the model takes
    them from the DataModule when training starts, or from the checkpoint given with
    ``--ckpt_path``. Because the network only exists from then on, the ``optimizer`` and
    ``lr_scheduler`` sections are instantiated when training starts, not when the CLI parses
    them (Lightning's automatic version would see a model without parameters).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["auto_configure_optimizers"] = False
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_optimizer_args((Optimizer,), nested_key="optimizer")
        parser.add_lr_scheduler_args(LRSchedulerTypeTuple, nested_key="lr_scheduler")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "prediction")

    def after_instantiate_classes(self) -> None:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        optimizer_init = config.get("optimizer")
        if not optimizer_init:
            return  # the model's own configure_optimizers (Adam) applies
        scheduler_init = config.get("lr_scheduler")

        def configure_optimizers(module: pl.LightningModule) -> Any:
            optimizer = instantiate_class(module.parameters(), optimizer_init)
            scheduler = instantiate_class(optimizer, scheduler_init) if scheduler_init else None
            return LightningCLI.configure_optimizers(module, optimizer, scheduler)

        self.model.configure_optimizers = MethodType(configure_optimizers, self.model)


def _configure_logging() -> None:
    logger = logging.getLogger("seqtag")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("seqtag: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(args: list[str] | None = None) -> None:
    """Run ``seqtag fit|validate|test|predict``; user errors end as one line on stderr."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get("SEQTAG_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    _configure_logging()
    try:
        SeqtagCLI(
            SequenceTagger,
            TaggingDataModule,
            subclass_mode_model=True,
            save_config_kwargs={"overwrite": True},
            args=argv,
        )
    except SeqtagError as err:
        if debug:
            raise
        print(f"seqtag: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
