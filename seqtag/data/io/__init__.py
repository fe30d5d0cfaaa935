"""Reading text: CoNLL-U, column, plain-text and JSON Lines files, and the one token rule.

Every reader opens files through :mod:`~seqtag.data.io.text_files` (encodings, line ends, NUL
bytes). Imports only :mod:`seqtag.errors`.
"""
