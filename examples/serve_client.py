"""Tag text with a running ``seqtag serve`` server, from Python, with httpx.

    seqtag serve --ckpt_path runs/demo/checkpoints/last.ckpt --port 8000      # one terminal
    python examples/serve_client.py "The cat sat on the mat ." "It rained ."  # another
    printf 'The cat sat .\\nIt rained .\\n' | python examples/serve_client.py

Prints one line per sentence, ``token/TAG`` pairs, and for a span model (chunks, entities)
the spans with their confidence. Sentences go to the server in requests of at most
``--batch`` lines; the server batches concurrent requests itself. A refused request (4xx)
ends the script with the server's one-line reason.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx


def wait_until_ready(client: httpx.Client, seconds: float) -> None:
    """Wait until ``GET /health`` answers 200 (the model is loaded), for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise SystemExit(f"serve_client: error: {client.base_url} is not ready")
        time.sleep(0.5)


def tag(
    client: httpx.Client, lines: Sequence[str], min_confidence: float | None = None
) -> list[dict[str, Any]]:
    """The server's answer for each text line: tokens, tags, confidences, spans.

    Lines are sent as token lists: a list of one-word lines would otherwise be refused as
    one sentence's tokens (``["Hello", "Thanks"]``).
    """
    payload: dict[str, Any] = {"sentences": [line.split() for line in lines]}
    if min_confidence is not None:
        payload["min_confidence"] = min_confidence
    response = client.post("/predict", json=payload)
    if response.is_client_error:  # 4xx: {"detail": "FIELD: what is wrong"}
        raise SystemExit(f"serve_client: error: {response.json()['detail']}")
    response.raise_for_status()
    return response.json()["sentences"]


def show(sentence: dict[str, Any]) -> str:
    """``token/TAG`` pairs, then ``[start:end TYPE confidence]`` for each span."""
    tagged = zip(sentence["tokens"], sentence["tags"], strict=True)
    pairs = [f"{token}/{tag}" for token, tag in tagged]
    spans = [
        f"[{s['start']}:{s['end']} {s['type']} {s['confidence']:.2f}]"
        for s in sentence["spans"] or []
    ]
    return " ".join(pairs + spans)


def chunks(lines: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(lines), size):
        yield lines[start : start + size]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lines", nargs="*", help="sentences (default: read standard input)")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server")
    parser.add_argument("--batch", type=int, default=64, help="lines per request")
    parser.add_argument("--min-confidence", type=float, help="span models: drop less likely")
    parser.add_argument("--wait", type=float, default=60, help="seconds to wait for /health")
    args = parser.parse_args(argv)
    lines = args.lines or [line for line in sys.stdin.read().splitlines() if line.strip()]
    with httpx.Client(base_url=args.url, timeout=120) as client:
        wait_until_ready(client, args.wait)
        for chunk in chunks(lines, max(1, args.batch)):
            for sentence in tag(client, chunk, args.min_confidence):
                print(show(sentence))


if __name__ == "__main__":
    main()
