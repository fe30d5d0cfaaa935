"""``seqtag export``: a subcommand of the ``seqtag`` command
(:meth:`seqtag.cli.trainer.SeqtagTrainer.export`), the command line of
:mod:`seqtag.integrations.export`.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(args: list[str] | None = None) -> None:
    """``seqtag export ARGS``: :func:`seqtag.cli.main.main` with ``export`` first."""
    from seqtag.cli.main import main as seqtag_main

    seqtag_main(["export", *(sys.argv[1:] if args is None else args)])
