"""The ``seqtag`` command: ``LightningCLI`` with seqtag's sections, checks of run options and
outputs, and one-line errors.

The top of the house: may import everything; nothing in seqtag imports it.
"""
