"""``python -m seqtag`` and the ``seqtag`` command.

OpenMP's wait policy is left as it is: ``OMP_WAIT_POLICY=PASSIVE`` (idle workers sleep at once
instead of spinning) was measured to cost an idle training run 1.84x its speed on 2 cores
(``benchmarks/contention.py --wait-policy passive``), for a smaller gain beside busy processes
than :class:`seqtag.runtime.thread_policy.ThreadPolicy` gives.
"""

from __future__ import annotations


def main() -> None:
    """Run the ``seqtag`` command (:func:`seqtag.cli.main.main`)."""
    from seqtag.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
