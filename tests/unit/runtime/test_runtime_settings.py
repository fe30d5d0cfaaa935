"""Process-wide settings seqtag makes on import, and that a user's own choice wins."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = "import os, seqtag; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"


def _capacity(environment: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_seqtag_keeps_the_onednn_kernel_cache_small():
    environment = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    assert _capacity(environment) == "8"


def test_a_capacity_set_by_the_user_is_kept():
    assert _capacity({**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "256"}) == "256"
