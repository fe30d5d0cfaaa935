"""The ``seqtag`` command: Lightning's CLI with seqtag's defaults and one-line errors."""

from __future__ import annotations

import logging
import os
import sys
from argparse import ArgumentError
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.cli import (
    LightningArgumentParser,
    LightningCLI,
    LRSchedulerTypeTuple,
)
from lightning.pytorch.plugins import CheckpointIO
from torch.optim import Optimizer

from seqtag.calibration.reliability import ReliabilityDiagram
from seqtag.calibration.temperature import TemperatureCalibration
from seqtag.checkpoint.io import read_checkpoint_file
from seqtag.checkpoint.plugin import SeqtagCheckpointIO
from seqtag.checkpoint.resume import install_resume_support
from seqtag.checkpoint.run_folder import refuse_another_runs_folder
from seqtag.cli.checkpoint_options import (
    TAGGED_FORMATS,
    checkpoint_data_options,
    restore_model_arguments,
    supplied_by_checkpoint,
)
from seqtag.cli.config_saver import TrainingConfigSaver
from seqtag.cli.messages import (
    debug_requested,
    one_line_errors,
    parser_error_line,
    silence_stdout,
    summarize_parser_error,
    undecodable_config,
)
from seqtag.cli.outputs import (
    config_files,
    no_logs_in_the_working_folder,
    refuse_before_reading,
    refuse_outputs_over_inputs,
)
from seqtag.cli.trainer import SeqtagTrainer
from seqtag.data.datamodule import TaggingDataModule
from seqtag.errors import CommandLineError
from seqtag.prediction.progress_bar import PredictionProgressBar
from seqtag.prediction.writer import PredictionWriter
from seqtag.runtime.thread_policy import ThreadPolicy
from seqtag.training.module import SequenceTagger

#: The subcommands that are methods of SeqtagTrainer (a checkpoint's use without a loop).
CHECKPOINT_COMMANDS = ("calibrate", "export", "serve")


class SeqtagCLI(LightningCLI):
    """The ``seqtag`` command: Lightning's CLI with seqtag's sections and defaults.

    - ``optimizer:`` and ``lr_scheduler:`` are Lightning's usual sections, linked to the
      model's ``optimizer``/``lr_scheduler`` arguments (``link_to``), so the model makes them
      in ``configure_optimizers``, after its network exists.
    - ``checkpoint:`` configures the ``ModelCheckpoint`` that keeps the best model
      (``best.ckpt``, by ``checkpoint.monitor``) in a fixed folder; ``seqtag fit`` refuses to
      start in a folder that already holds an earlier run's checkpoints, unless it resumes that
      run with ``--ckpt_path``.
    - ``last_checkpoint:`` is a second, unmonitored ``ModelCheckpoint`` writing ``last.ckpt``
      in the same folder after every epoch (or every ``last_checkpoint.every_n_train_steps``).
      Lightning's ``save_last`` copies only when the monitored callback saves, so an epoch
      that does not improve the score would leave ``last.ckpt`` behind the run it resumes.
    - ``prediction:`` configures the :class:`~seqtag.prediction.writer.PredictionWriter`.
    - ``model:`` defaults to :class:`~seqtag.SequenceTagger`, and with ``--ckpt_path`` the
      model's hyper-parameters and the data's file-format options come from the checkpoint
      (:mod:`seqtag.cli.checkpoint_options`), so ``seqtag predict --ckpt_path M
      --data.predict_path F`` needs no config.
    - ``export``, ``calibrate`` and ``serve`` are subcommands like ``fit``: methods of
      :class:`~seqtag.cli.trainer.SeqtagTrainer`, whose signatures and docstrings give their
      options.
    - ``--debug`` (before or after the subcommand) shows the traceback of a user error.
    """

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands, then ``calibrate``, ``export`` and ``serve`` (methods of
        :class:`~seqtag.cli.trainer.SeqtagTrainer`), with the arguments the CLI passes them."""
        passed = {"model", "datamodule"}
        commands = (*CHECKPOINT_COMMANDS, "prepare")  # prepare: a corpus, no checkpoint
        return {**LightningCLI.subcommands(), **dict.fromkeys(commands, passed)}

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Lightning's parser (the command's and each subcommand's), with ``--debug``."""
        parser = super().init_parser(**kwargs)
        parser.add_argument(
            "--debug",
            action="store_true",
            help="Show the traceback of a user error instead of one line (or SEQTAG_DEBUG=1).",
        )
        return parser

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        """Lightning's parsers, and ``seqtag --version``."""
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if add_subcommands:  # nothing random in them: no "seed set" lines
            self.parser.set_defaults(
                {f"{name}.seed_everything": False for name in (*CHECKPOINT_COMMANDS, "prepare")}
            )
        self.parser.add_argument(
            "-V",
            "--version",
            action="version",
            version=_version_line(),
            help="Print the versions of seqtag, torch and Lightning and exit.",
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_optimizer_args(
            (Optimizer,), nested_key="optimizer", link_to="model.init_args.optimizer"
        )
        parser.add_lr_scheduler_args(
            LRSchedulerTypeTuple, nested_key="lr_scheduler", link_to="model.init_args.lr_scheduler"
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.link_arguments("checkpoint.dirpath", "last_checkpoint.dirpath")
        parser.set_defaults(
            {
                "model": {"class_path": "seqtag.SequenceTagger"},
                "checkpoint.monitor": "val_acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.enable_version_counter": False,
                "last_checkpoint.filename": "last",
                "last_checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "prediction")
        # Fits the temperature on the dev set at the end of fit (--calibration.enabled false).
        parser.add_lightning_class_args(TemperatureCalibration, "calibration")
        # After test: reliability bins (JSON) and diagrams (--reliability.enabled false).
        parser.add_lightning_class_args(ReliabilityDiagram, "reliability")
        # Fewer intra-op threads while other processes keep cores busy (--threads.enabled
        # false); off for --trainer.deterministic true, whose results must not depend on load.
        parser.add_lightning_class_args(ThreadPolicy, "threads")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then read ``ckpt_path``'s checkpoint once, as plain data, before Lightning can.

        The checkpoint is found where the parser put it, however it was given (``--ckpt_path``,
        a config file, a ``predict:`` section, the last of two options, an abbreviation), and
        opened by seqtag's one reader (:func:`~seqtag.checkpoint.io.read_checkpoint_file`):
        validated, with only its checked plain hyper-parameters kept. What it supplies to the
        subcommand is decided in :mod:`seqtag.cli.checkpoint_options`: the model's arguments
        are set here, and its data options become defaults of the subcommand's ``data``
        section (``parser.set_defaults``), under the unchanged command line parsed again, so
        anything the user gives wins. Lightning's own parsing of the checkpoint (which hands
        its class paths to jsonargparse, importing what they name) is skipped: ``ckpt_path``
        is held back until :meth:`before_instantiate_classes`. Outputs that ``export`` and
        ``calibrate`` would write over the checkpoint are refused before it is read.

        With ``parser_kwargs={"exit_on_error": False}`` (as :func:`main` passes), a command line
        or config that does not parse raises :class:`CommandLineError` with a one-line summary
        instead of printing the usage and exiting.
        """
        self._parse(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        section = self.config[subcommand]
        if self.config.get("debug") or section.get("debug"):
            debug_requested.set(True)
        ckpt_path = section.get("ckpt_path")
        if not ckpt_path:
            if subcommand not in ("fit", "prepare"):
                raise CommandLineError(
                    f"seqtag {subcommand} needs a trained model: pass --ckpt_path "
                    "(for example runs/NAME/checkpoints/best.ckpt, written by seqtag fit)"
                )
            return
        refuse_before_reading(subcommand, section)
        checkpoint = {}
        if supplied_by_checkpoint(subcommand).read_first:
            checkpoint = read_checkpoint_file(ckpt_path, SequenceTagger)
        options = checkpoint_data_options(subcommand, ckpt_path, checkpoint) if checkpoint else {}
        if options:
            parser.set_defaults({f"{subcommand}.data.{key}": val for key, val in options.items()})
            self._parse(parser, args)
            section = self.config[subcommand]
        if checkpoint:
            restore_model_arguments(section, checkpoint)
        self.checkpoint_path = ckpt_path
        self.checkpoint_read = (ckpt_path, checkpoint) if checkpoint else None
        section["ckpt_path"] = None

    def _parse(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            argv = sys.argv[1:] if args is None else args
            raise CommandLineError(parser_error_line(str(err), argv, self.subcommands())) from err

    def before_instantiate_classes(self) -> None:
        if self.subcommand and getattr(self, "checkpoint_path", None):
            self.config[self.subcommand]["ckpt_path"] = self.checkpoint_path
        # Checkpoints are opened with weights_only=True unless the user asks otherwise, also on
        # torch versions whose torch.load default still unpickles arbitrary objects.
        section = self.config[self.subcommand] if self.subcommand else {}
        if "weights_only" in section and section["weights_only"] is None:
            section["weights_only"] = True
        if self.subcommand == "predict":
            # The writer streams predictions to the output; Lightning keeping them all as well
            # would make memory grow with the input.
            self.config["predict"]["return_predictions"] = False
        if self.subcommand == "calibrate":
            fmt = section["data"]["format"]
            if fmt not in TAGGED_FORMATS:
                raise CommandLineError(
                    f"data.format: seqtag calibrate reads a tagged dev file: "
                    f"{' or '.join(TAGGED_FORMATS)}, got {fmt} (see seqtag calibrate --help)"
                )
        if self.subcommand:
            no_logs_in_the_working_folder(self.subcommand, section)
            refuse_outputs_over_inputs(section, config_files(self.config, section))
        from seqtag.cli.run_options import check_run_options  # values that would fail later

        config = self.config[self.subcommand] if self.subcommand else self.config
        check_run_options(self.subcommand, config.as_dict())

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """Lightning's trainer, reading checkpoints through :class:`SeqtagCheckpointIO`.

        So a file that ``--ckpt_path last`` or ``hpc`` resolves to is validated like a named
        one. A ``CheckpointIO`` plugin of the user's own is left alone. Trainer settings it
        refuses (``--trainer.max_epochs -5``) are a command-line error (one line, status 2).
        """
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = config.get("trainer") or {}
        plugins = kwargs.get("plugins", trainer_config.get("plugins"))
        plugins = (
            [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
        )
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            read = getattr(self, "checkpoint_read", None)  # opened once, in parse_arguments
            kwargs["plugins"] = [*plugins, SeqtagCheckpointIO(preloaded=read)]
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError) as err:
            raise CommandLineError(f"trainer: {err}") from err

    def after_instantiate_classes(self) -> None:
        install_resume_support(self.trainer)
        _progress_bar_on_stderr(self.trainer)

    def before_fit(self) -> None:
        """Refuse another run's checkpoint folder before the first epoch, not after it
        (:func:`~seqtag.checkpoint.run_folder.refuse_another_runs_folder`)."""
        resumed = getattr(self, "checkpoint_path", None)
        for callback in self.trainer.checkpoint_callbacks:
            folder = getattr(callback, "dirpath", None)
            if folder and "://" not in str(folder):
                refuse_another_runs_folder(folder, resumed)


def _progress_bar_on_stderr(trainer: pl.Trainer) -> None:
    """Swap Lightning's default bar for one that draws the prediction bar on stderr."""
    for position, callback in enumerate(trainer.callbacks):
        if type(callback) is TQDMProgressBar:
            replacement = PredictionProgressBar(
                refresh_rate=callback.refresh_rate, process_position=callback.process_position
            )
            trainer.callbacks[position] = replacement


def _configure_logging() -> None:
    logger = logging.getLogger("seqtag")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("seqtag: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


DESCRIPTION = (
    "seqtag: BiRNN sequence taggers (POS tagging, chunking, NER) on PyTorch Lightning. "
    "Subcommands: fit (train), validate, test, predict (tag text), calibrate (fit a "
    "checkpoint's temperature), export (ONNX/TorchScript), serve (an HTTP server) and prepare "
    "(encode a training corpus to stream, seqtag[stream]); seqtag "
    "SUBCOMMAND --help lists each one's options."
)


def _version_line() -> str:
    import lightning

    from seqtag import __version__

    return f"seqtag {__version__} (torch {torch.__version__}, lightning {lightning.__version__})"


def main(args: list[str] | None = None) -> None:
    """Run ``seqtag SUBCOMMAND``; user errors end as one line on stderr.

    An error caused by the input (a :class:`~seqtag.errors.SeqtagError`: a malformed corpus or
    vector file, a file that is not a seqtag checkpoint, a command line or config that does not
    parse, a config file that is not UTF-8) is printed as the single line
    ``seqtag: error: WHAT`` on stderr, without a traceback, and the process exits with status 2
    for command-line and config errors (as argparse does) and 1 for everything else. Any other
    exception is a bug and keeps its traceback. ``--debug`` (an option of the command and of
    every subcommand) or ``SEQTAG_DEBUG=1`` re-raises user errors too, to show where they came
    from; a command line that does not parse is one line unless ``SEQTAG_DEBUG=1``.
    ``--help``, ``--print_config`` and ``--version`` print to stdout and exit 0 as usual.

    Standard output closed early by its reader (``seqtag predict ... | head``) ends the run
    quietly, as Unix tools do, with status 141, the shell's status for a process ended by
    SIGPIPE (128 + 13), so ``set -o pipefail`` sees what it sees for ``cat`` or ``grep``.

    Args:
        args: the arguments after ``seqtag``; ``None`` reads ``sys.argv``.
    """
    try:
        try:
            _run(args)
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()  # a closed pipe shows here rather than at interpreter exit
    except BrokenPipeError:
        silence_stdout()
        raise SystemExit(141) from None


def _run(args: list[str] | None) -> None:
    """:func:`main` without its handling of a closed standard output."""
    _configure_logging()
    asked = debug_requested.set(os.environ.get("SEQTAG_DEBUG") == "1")
    try:
        with one_line_errors():  # user errors and the system's refusals: one line
            try:
                SeqtagCLI(
                    SequenceTagger,
                    TaggingDataModule,
                    trainer_class=SeqtagTrainer,
                    subclass_mode_model=True,
                    save_config_callback=TrainingConfigSaver,
                    save_config_kwargs={"overwrite": True},
                    parser_kwargs={
                        "exit_on_error": False,
                        "description": DESCRIPTION,
                        "prog": "seqtag",
                    },
                    args=args,
                )
            except ArgumentError as err:
                # Parse errors of the command line became CommandLineErrors in
                # parse_arguments; what reaches here comes from jsonargparse instantiating
                # the parsed classes.
                if debug_requested.get():
                    raise
                raise CommandLineError(summarize_parser_error(str(err))) from None
            except MisconfigurationException as err:
                # Settings Lightning finds wrong only once running (a checkpoint monitor that
                # the resumed model does not log): the user's, so one line, exit 2.
                if debug_requested.get():
                    raise
                raise CommandLineError(str(err).strip().splitlines()[0]) from None
            except UnicodeDecodeError:
                # jsonargparse reads --config files (and YAML given to any option) without a
                # filename in its error; find the file on the command line, or it was not
                # the user's input.
                argv = sys.argv[1:] if args is None else args
                error = None if debug_requested.get() else undecodable_config(argv)
                if error is None:
                    raise
                raise error from None
    finally:
        debug_requested.reset(asked)


if __name__ == "__main__":
    main()
