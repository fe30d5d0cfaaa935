"""``python -m seqtag`` and the ``seqtag`` command: the OpenMP wait policy, then the CLI.

Idle OpenMP worker threads spin for a while before they sleep (libgomp's default), so between
two kernels a run's second thread keeps a core busy that another process on a shared machine
could use. The command asks for ``OMP_WAIT_POLICY=PASSIVE`` (idle workers sleep at once) unless
the environment already names a policy: ``OMP_WAIT_POLICY=ACTIVE seqtag fit ...`` keeps them
spinning. OpenMP reads the variable once, when torch loads it, so it is set here, before
anything imports torch; programs that ``import seqtag`` themselves are left alone.
"""

from __future__ import annotations

import os
import sys

#: The OpenMP wait policy of the ``seqtag`` command when the environment names none.
OMP_WAIT_POLICY = "PASSIVE"


def main() -> None:
    """Run the ``seqtag`` command (:func:`seqtag.cli.main`) with the wait policy above."""
    if "torch" not in sys.modules:  # later, OpenMP would not read it
        os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    from seqtag.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
