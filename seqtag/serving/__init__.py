"""``seqtag serve``: a checkpoint behind HTTP on LitServe (request checks and limits, batched
inference through :mod:`seqtag.prediction`, health, info, graceful shutdown).

May import every package but ``cli`` (which alone imports it); ``litserve`` only on first use.
"""
