"""The config that ``seqtag fit`` saves beside its logs, and where it never writes one."""

from __future__ import annotations

import logging
import os

import lightning.pytorch as pl
from lightning.pytorch.cli import SaveConfigCallback

from seqtag.files.outputs import same_file

__all__ = ["TrainingConfigSaver"]


class TrainingConfigSaver(SaveConfigCallback):
    """Lightning's config saver, for ``fit`` with a logger only, never over a given config.

    Evaluation and prediction runs write no config, nor does training without a logger: the
    log folder is then the working directory, where Lightning's saver would overwrite any
    ``config.yaml`` (the user's own, perhaps the one this run was started with). With a
    logger, a log folder holding one of this run's ``--config`` files is left alone too.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.loggers:
            return
        target = os.path.join(trainer.log_dir or "", self.config_filename)
        given = [str(getattr(item, "absolute", item)) for item in self.config.get("config") or []]
        if any(same_file(target, name) for name in given):
            logging.getLogger("seqtag").warning(
                "%s is this run's --config: not overwritten with the full config", target
            )
            return
        super().setup(trainer, pl_module, stage)
