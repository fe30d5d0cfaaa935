"""Files seqtag writes: output checks, atomic replacement, never over an input.

Owns how any output file is checked (a device, a link, a name too long, one of the command's
inputs) and written (temporary file, fsync, rename). Imports only :mod:`seqtag.errors`.
"""
