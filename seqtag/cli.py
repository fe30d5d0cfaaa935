"""The ``seqtag`` command: Lightning's CLI with seqtag's defaults and one-line errors."""

from __future__ import annotations

import logging
import os
import sys

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from seqtag.callbacks import PredictionWriter
from seqtag.data.datamodule import TaggingDataModule
from seqtag.errors import SeqtagError
from seqtag.module import SequenceTagger


class SeqtagCLI(LightningCLI):
    """Adds a checkpoint callback (``checkpoint.*``) and the prediction writer (``prediction.*``).

    Vocabulary sizes, the tag set and the embedding width are not arguments: the model takes
    them from the DataModule when training starts, or from the checkpoint given with
    ``--ckpt_path``.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
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
