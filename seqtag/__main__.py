"""``python -m seqtag`` runs the ``seqtag`` command."""

from seqtag.cli import main

main()
