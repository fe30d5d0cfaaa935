"""The ``seqtag`` command's trainer: Lightning's ``Trainer`` with ``export`` and ``calibrate``.

``LightningCLI`` makes a subcommand of each method that ``SeqtagCLI.subcommands()`` names and
builds its options from the method's signature and docstring, as it does for ``fit``: so
``seqtag export`` and ``seqtag calibrate`` take the same config files, ``--help``,
``--print_config`` and one-line errors as the other subcommands. The work itself is done by
:mod:`seqtag.integrations.export` and :mod:`seqtag.calibration`; these methods only connect
the parsed options to them.
"""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as pl

__all__ = ["SeqtagTrainer"]


class SeqtagTrainer(pl.Trainer):
    """Lightning's ``Trainer``, plus the two commands that use a checkpoint without a loop."""

    def export(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        *,
        format: Literal["onnx", "torchscript"],
        output: str,
    ) -> None:
        """Export a trained tagger to ONNX or TorchScript, with its vocabulary beside it.

        Writes OUTPUT and OUTPUT.vocab.json, to tag text without seqtag (see
        :mod:`seqtag.integrations.export`); neither may be the checkpoint, and a failed export
        leaves earlier files as they were.

        Args:
            model: unused: the exported model is the checkpoint's, which
                :func:`seqtag.integrations.export.export` reads (once).
            datamodule: unused: an export reads no data.
            ckpt_path: the seqtag checkpoint to export (written by seqtag fit).
            format: the model file's format: onnx (any ONNX runtime) or torchscript
                (torch.jit.load, without seqtag).
            output: the model file to write; its vocabulary goes to OUTPUT.vocab.json.
        """
        from seqtag.integrations.export import export, vocabulary_path

        export(str(ckpt_path), format, output)
        print(f"wrote {output} and {vocabulary_path(output)}")

    def calibrate(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        output: str | None = None,
    ) -> None:
        """Fit the temperature of a trained tagger on a dev set, into a new checkpoint.

        Reads --data.val_path with the checkpoint's data options (any --data option given
        wins), fits the temperature that minimises the dev set's negative log-likelihood, and
        writes the checkpoint with it to OUTPUT; the checkpoint given is only read. Prints the
        temperature and the dev NLL and token ECE before and after.

        Args:
            model: the model class to rebuild from the checkpoint's weights and arguments.
            datamodule: reads the dev file (data.val_path).
            ckpt_path: the seqtag checkpoint to calibrate (written by seqtag fit).
            output: the checkpoint to write (default: CKPT.calibrated.ckpt beside it); an
                existing file is refused, never overwritten.
        """
        from seqtag.cli.calibrate import calibrate_checkpoint, output_path

        target = output_path(str(ckpt_path), output)
        # The plugin returns the checkpoint the command line has already read and validated.
        checkpoint = self.strategy.checkpoint_io.load_checkpoint(str(ckpt_path))
        calibrate_checkpoint(checkpoint, type(model), datamodule, target)
