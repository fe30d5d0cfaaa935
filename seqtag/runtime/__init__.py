"""Threads: how many intra-op threads each process uses, and the policy that gives cores back
while other processes keep them busy.

Imports :mod:`seqtag.errors` and :mod:`seqtag.options` only.
"""
