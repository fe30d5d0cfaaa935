"""The ``seqtag`` command's trainer: Lightning's ``Trainer`` with ``export``, ``calibrate``,
``serve`` and ``prepare``.

``LightningCLI`` makes a subcommand of each method that ``SeqtagCLI.subcommands()`` names and
builds its options from the method's signature and docstring, as it does for ``fit``: so
``seqtag export``, ``seqtag calibrate`` and ``seqtag serve`` take the same config files,
``--help``, ``--print_config`` and one-line errors as the other subcommands. The work itself is
done by :mod:`seqtag.integrations.export`, :mod:`seqtag.calibration`, :mod:`seqtag.serving`
and :mod:`seqtag.data.prepared`; these methods only connect the parsed options to them.
"""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as pl

from seqtag.options import NonNegativeFloat, PositiveFloat, PositiveInt, Probability
from seqtag.serving.requests import Limits  # plain data: no serving extra needed

__all__ = ["SeqtagTrainer"]


class SeqtagTrainer(pl.Trainer):
    """Lightning's ``Trainer``, plus the commands that use a checkpoint without a loop."""

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

    def serve(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        *,
        host: Literal["127.0.0.1", "0.0.0.0", "::"] = "127.0.0.1",
        port: int = 8000,
        workers: PositiveInt = 1,
        max_batch_size: PositiveInt = 32,
        batch_timeout: NonNegativeFloat = 0.0,
        max_tokens: PositiveInt = Limits.max_tokens,
        max_sentences: PositiveInt = Limits.max_sentences,
        timeout: PositiveFloat = 30.0,
        confidences: bool = True,
        min_confidence: Probability | None = None,
    ) -> None:
        """Serve a trained tagger over HTTP (needs the serve extra: pip install 'seqtag[serve]').

        POST /predict tags {"sentences": [["The", "cat"], ...]} (token lists, or text lines
        split on whitespace) as tag(spans=True) does; GET /health answers 200 once the model
        is loaded, GET /info describes the model and GET /docs the API (see docs/serving.md).
        Requests that arrive together are tagged in one batch. SIGTERM stops the server after
        it has answered every request it accepted.

        Args:
            model: unused: the workers build the checkpoint's model.
            datamodule: unused: requests bring the text.
            ckpt_path: the seqtag checkpoint to serve (written by seqtag fit).
            host: the address to listen on: 127.0.0.1 (this machine only), 0.0.0.0 (every
                IPv4 interface) or :: (every interface).
            port: the TCP port, from 1024 to 65535.
            workers: inference processes (per GPU), each with its own copy of the model; on
                the CPU they share the cores (the thread policy of --threads applies).
            max_batch_size: requests tagged together at most.
            batch_timeout: seconds a worker waits for more requests after a batch's first
                (0: none; requests that queue while it is busy are batched anyway).
            max_tokens: tokens per request at most; a larger request is answered 413.
            max_sentences: sentences per request at most; more are answered 413.
            timeout: seconds a request may wait in the queue; then it is answered 504.
            confidences: answer each tag's probability (with a CRF a forward-backward pass).
            min_confidence: span models only: spans less likely than this are dropped (their
                tokens tagged O), unless a request sets its own min_confidence.
        """
        from seqtag.cli.serve import serve_checkpoint

        options = {
            "host": host,
            "port": port,
            "workers": workers,
            "max_batch_size": max_batch_size,
            "batch_timeout": batch_timeout,
            "max_tokens": max_tokens,
            "max_sentences": max_sentences,
            "timeout": timeout,
            "confidences": confidences,
            "min_confidence": min_confidence,
        }
        serve_checkpoint(self, str(ckpt_path), options)

    def prepare(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | None = None,
        *,
        output: str,
        chunk_bytes: str = "64MB",
        workers: PositiveInt = 1,
    ) -> None:
        """Encode a training corpus with LitData, to stream in training (needs seqtag[stream]).

        Install the extra with pip install 'seqtag[stream]'. Reads --data.train_path with the
        data options, makes the vocabularies as seqtag fit would, and writes the encoded
        sentences with LitData to OUTPUT, a new local folder or a URL (s3://bucket/prefix),
        with seqtag-prepared.json, its manifest. Train from it with --data.train_path OUTPUT:
        every process streams only its share, and a resumed run continues at the same batch
        (see docs/scaling.md). An OUTPUT that already holds files is refused, never written
        over.

        Args:
            model: unused: preparing builds no model.
            datamodule: reads the training corpus (data.train_path) and, with data.vectors,
                the other splits' words, as seqtag fit does.
            output: the new folder or URL to write (it must not exist, or be empty).
            chunk_bytes: the size of LitData's chunk files (64MB, 256MB...): the unit that
                each process streams and caches.
            workers: LitData's writing processes.
        """
        from seqtag.data.prepared import prepare_corpus

        manifest = prepare_corpus(datamodule, output, chunk_bytes=chunk_bytes, num_workers=workers)
        print(
            f"prepared {manifest['sentences']:,} sentences ({manifest['tokens']:,} tokens) of "
            f"{manifest['source']['path']} into {output}; train with --data.train_path {output}"
        )
