"""A LitServe server configured as ``seqtag serve`` whose worker does no tagging at all.

    python benchmarks/null_server.py PORT MAX_BATCH_SIZE

Each sentence is answered with ``X`` tags. ``serving_floor.py`` drives it to measure what the
serving stack alone (uvicorn, FastAPI, LitServe's queue and batching) allows on a machine.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import litserve as ls
from fastapi.responses import Response


def null_answer(sentence: list[str]) -> dict[str, Any]:
    """What the null worker answers for one sentence (and what the load client expects)."""
    return {"tokens": sentence, "tags": ["X"] * len(sentence), "confidences": None, "spans": None}


class NullAPI(ls.LitAPI):
    """Decodes and encodes like seqtag's ``TaggerAPI``; predicts nothing."""

    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request, **kwargs: Any) -> list[list[str]]:
        return request["sentences"]

    def predict(self, x: list[list[list[str]]], **kwargs: Any) -> list[list[dict[str, Any]]]:
        return [[null_answer(sentence) for sentence in request] for request in x]

    def encode_response(self, output: list[dict[str, Any]], **kwargs: Any) -> Response:
        body = json.dumps({"sentences": output, "batch_requests": 1}).encode("utf-8")
        return Response(content=body, media_type="application/json")


if __name__ == "__main__":
    port, max_batch_size = int(sys.argv[1]), int(sys.argv[2])
    api = NullAPI(max_batch_size=max_batch_size, batch_timeout=0.0)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, fast_queue=True)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")
