"""``seqtag export``: the command line of :mod:`seqtag.integrations.export`."""

from __future__ import annotations

import argparse
import os

from seqtag.cli.messages import one_line_errors
from seqtag.integrations.export import FORMATS, check_outputs, export, vocabulary_path


def main(args: list[str] | None = None) -> None:
    """``seqtag export --ckpt_path P --format onnx|torchscript --output F``."""
    parser = argparse.ArgumentParser(
        prog="seqtag export",
        description="Export a trained tagger to ONNX or TorchScript, with its vocabulary as "
        "OUTPUT.vocab.json, to tag text without seqtag.",
    )
    parser.add_argument("--ckpt_path", required=True, help="seqtag checkpoint to export")
    parser.add_argument("--format", required=True, choices=FORMATS, help="model file format")
    parser.add_argument("--output", required=True, help="model file to write")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    options = parser.parse_args(args)
    debug = options.debug or os.environ.get("SEQTAG_DEBUG") == "1"
    with one_line_errors(debug):
        check_outputs(options.ckpt_path, options.output)  # before loading anything
        export(options.ckpt_path, options.format, options.output)
    print(f"wrote {options.output} and {vocabulary_path(options.output)}")
