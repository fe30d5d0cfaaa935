"""Starting and stopping the server: :func:`serve` (what ``seqtag serve`` runs).

The server is LitServe's: one or more HTTP processes (uvicorn, FastAPI) that check requests
(:class:`~seqtag.serving.gate.RequestGate`) and queue them, and ``workers`` inference processes
per device that tag them in batches (:class:`~seqtag.serving.api.TaggerAPI`). Before any of it
starts, the checkpoint is read once, validated by loading it, and fingerprinted, so a bad file
or a busy port is a one-line error, and ``GET /info`` describes the file the workers load.

On SIGTERM (what ``docker stop`` and Kubernetes send) the server stops taking connections,
answers every request it has accepted, then exits with status 0. A request that waits in the
queue longer than ``timeout`` seconds is answered 504, and the server goes on serving.
"""

from __future__ import annotations

import io
import logging
import signal
import socket
import threading
import time
from typing import Any

from seqtag.data.streaming import DEFAULT_PREDICT_MAX_TOKENS
from seqtag.errors import CheckpointError, CommandLineError, ConfigError
from seqtag.prediction.progress import digest
from seqtag.serving.inference import BATCH_SENTENCES
from seqtag.serving.requests import Limits
from seqtag.serving.threads import ThreadSettings

log = logging.getLogger(__name__)

__all__ = ["HOSTS", "check_serve_options", "model_info", "read_model", "serve"]

#: The addresses LitServe binds: this machine only, every IPv4 interface, every interface.
HOSTS = ("127.0.0.1", "0.0.0.0", "::")
#: The predict endpoint.
PREDICT_PATH = "/predict"
_NO_LITSERVE = (
    "seqtag serve needs LitServe, which is not installed: pip install 'seqtag[serve]' "
    "(or pip install litserve)"
)


def check_serve_options(host: str, port: int, batch_timeout: float, timeout: float | bool) -> None:
    """Refuse what LitServe would refuse with a traceback; ``CommandLineError`` naming the
    option."""
    if host not in HOSTS:
        raise CommandLineError(f"host: must be one of {', '.join(HOSTS)}, got {host}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
        raise CommandLineError(f"port: must be an integer from 1024 to 65535, got {port}")
    if timeout is not False and batch_timeout >= timeout:
        raise CommandLineError(
            f"batch_timeout: must be below timeout ({timeout} s), got {batch_timeout}"
        )


def read_model(ckpt_path: str) -> tuple[bytes, Any]:
    """The checkpoint file's bytes, and the model they hold (on the CPU), validated.

    Read once: the workers load these bytes, never the file again, so what ``/info``
    fingerprints is what they serve.
    """
    from seqtag.training.module import SequenceTagger

    try:
        with open(ckpt_path, "rb") as stream:
            data = stream.read()
    except OSError as err:
        raise CheckpointError(
            f"{ckpt_path}: cannot read it ({err.strerror or err}; expected a checkpoint "
            "written by seqtag fit)"
        ) from None
    try:
        model = SequenceTagger.load_from_checkpoint(io.BytesIO(data), map_location="cpu")
    except CheckpointError as err:  # the reader names an open file "the checkpoint"
        message = str(err).removeprefix("the checkpoint: ")
        raise CheckpointError(f"{ckpt_path}: {message}") from None
    return data, model


def model_info(ckpt_path: str, data: bytes, model: Any) -> dict[str, Any]:
    """What ``GET /info`` says of the model (its ``model`` section)."""
    from seqtag import __version__

    vocabularies = model.vocabularies
    return {
        "seqtag_version": __version__,
        "checkpoint": {"path": str(ckpt_path), "size": len(data), "blake2b": digest(data)},
        "tags": list(vocabularies.tags),
        "tag_scheme": vocabularies.tag_scheme,
        "corpus_scheme": vocabularies.corpus_scheme,
        "spans": bool(vocabularies.corpus_scheme),
        "decoder": model.hparams.get("decoder"),
    }


def serve(
    ckpt_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_batch_size: int = 32,
    batch_timeout: float = 0.0,
    max_tokens: int = Limits.max_tokens,
    max_sentences: int = Limits.max_sentences,
    timeout: float = 30.0,
    confidences: bool = True,
    min_confidence: float | None = None,
    accelerator: str = "cpu",
    devices: int | list[int] = 1,
    threads: ThreadSettings | None = None,
) -> None:
    """Serve the tagger of ``ckpt_path`` over HTTP until SIGTERM (or Ctrl+C).

    Args:
        ckpt_path: a seqtag checkpoint (written by seqtag fit).
        host: the address to listen on (``127.0.0.1``: this machine only).
        port: the TCP port.
        workers: inference processes per device, each with its own copy of the model.
        max_batch_size: requests tagged together at most.
        batch_timeout: seconds a worker waits for more requests after a batch's first (0:
            none; requests that queue while it is busy are batched anyway).
        max_tokens: tokens per request at most (more: 413).
        max_sentences: sentences per request at most (more: 413).
        timeout: seconds a request may wait in the queue before a 504 answer.
        confidences: answer each tag's probability too.
        min_confidence: span models only: drop less likely spans, unless a request sets its
            own threshold.
        accelerator: ``cpu``, ``cuda`` or ``mps``.
        devices: how many devices, or which (CUDA indices).
        threads: the workers' thread policy (default: adapt, shared by ``workers``).
    """
    check_serve_options(host, port, batch_timeout, timeout)
    try:
        import litserve as ls
    except ImportError:
        raise ConfigError(_NO_LITSERVE) from None
    from seqtag.serving.api import TaggerAPI
    from seqtag.serving.gate import RequestGate

    data, model = read_model(ckpt_path)
    info = model_info(ckpt_path, data, model)
    del model  # the workers build their own
    spans = info["spans"]
    if min_confidence is not None and not spans:
        raise ConfigError(
            "min_confidence drops low-confidence spans, but this model tags no spans (it was "
            "trained without data.tag_scheme, e.g. for POS tags): leave it unset"
        )
    _check_port_free(host, port)
    limits = Limits(max_sentences=max_sentences, max_tokens=max_tokens)
    device_count = devices if isinstance(devices, int) else len(devices)
    threads = threads or ThreadSettings()
    threads = ThreadSettings(workers * device_count, threads.adapt, threads.interval_s)
    info.update(
        confidences=confidences,
        min_confidence=min_confidence,
        limits={
            "max_sentences": max_sentences,
            "max_tokens": max_tokens,
            "max_body_bytes": limits.max_body_bytes,
        },
        batching={
            "max_batch_size": max_batch_size,
            "batch_timeout": batch_timeout,
            "sentences_per_pass": BATCH_SENTENCES,
            "padded_tokens_per_pass": DEFAULT_PREDICT_MAX_TOKENS,
        },
    )
    api = TaggerAPI(
        data,
        limits=limits,
        confidences=confidences,
        min_confidence=min_confidence,
        threads=threads,
        max_batch_size=max_batch_size,
        batch_timeout=batch_timeout,
    )
    gate = (RequestGate, {"path": PREDICT_PATH, "limits": limits, "spans": spans})
    server = ls.LitServer(
        api,
        accelerator=accelerator,
        devices=devices,
        workers_per_device=workers,
        timeout=timeout,
        model_metadata=info,
        middlewares=[gate],
        fast_queue=True,
    )
    _stop_on_sigterm(server)
    log.info(
        "serving %s on http://%s:%d with %d worker(s); GET /health answers 200 once the model "
        "is loaded",
        ckpt_path,
        host,
        port,
        workers * device_count,
    )
    try:
        server.run(host=host, port=port, generate_client_file=False, log_level="warning")
    except RuntimeError as err:  # a worker could not start (its error is logged above)
        for worker in getattr(server, "inference_workers", []):
            worker.terminate()
        raise ConfigError(f"seqtag serve: {err}") from None


def _check_port_free(host: str, port: int) -> None:
    """A port in use is a one-line error now, not uvicorn's exit after the model is loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(
                f"port: cannot listen on {host}:{port} ({err.strerror or err}); choose another "
                "--port"
            ) from None


def _stop_on_sigterm(server: Any) -> None:
    """SIGTERM (and Ctrl+C) stop the server as its own shutdown endpoint would: gracefully.

    LitServe's ``run`` waits on its shutdown event, then stops the HTTP processes (each
    finishes the requests it holds) before the workers. The event is set from a thread: the
    handler runs in the main thread, which is blocked inside that very event's wait. The HTTP
    processes, forked from this one, put these handlers back once uvicorn has stopped, so they
    end without a KeyboardInterrupt traceback; a second Ctrl+C interrupts as usual.
    """

    def stop(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        threading.Thread(target=_set_shutdown, args=(server,), daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _set_shutdown(server: Any) -> None:
    while True:
        event = getattr(server, "_shutdown_event", None)  # made when run() starts
        if event is not None:
            event.set()
            return
        time.sleep(0.05)
