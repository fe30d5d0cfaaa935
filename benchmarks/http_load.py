"""The load generator of ``benchmarks/serving.py``: keep-alive HTTP/1.1 clients on asyncio.

Each of ``N`` client tasks holds one connection and sends its next request as soon as the
last is answered, until the requests or the time run out; every answer is checked against the
expected one (``tag(spans=True)``'s) and its latency recorded.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from typing import Any


def differences(answers: list[dict], wanted: list[dict]) -> tuple[int, int, float]:
    """Sentences not identical, sentences whose tags or spans differ, and the largest
    difference of a confidence (a CRF's marginals can move in the last bit with the padded
    length of the batch a sentence shared)."""
    inexact, wrong, largest = 0, 0, 0.0
    for answer, expected in zip(answers, wanted, strict=True):
        if answer == expected:
            continue
        inexact += 1
        spans = [
            [(s["start"], s["end"], s["type"]) for s in a["spans"] or []]
            for a in (answer, expected)
        ]
        same = answer["tokens"] == expected["tokens"] and answer["tags"] == expected["tags"]
        if not same or spans[0] != spans[1]:
            wrong += 1
            continue
        found = [*(answer["confidences"] or []), *(s["confidence"] for s in answer["spans"] or [])]
        truth = [
            *(expected["confidences"] or []),
            *(s["confidence"] for s in expected["spans"] or []),
        ]
        largest = max([largest, *(abs(a - b) for a, b in zip(found, truth, strict=True))])
    return inexact, wrong, largest


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


class Connection:
    """One keep-alive HTTP/1.1 connection, written for this load: a request costs the client
    tens of microseconds of CPU (httpx's pool cost 2 ms per request at 8 connections and 7 ms
    at 64 on 2 cores, so it measured itself). A request whose connection fails is not retried:
    it counts as lost."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            status = int(head.split(" ", 2)[1])
            length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
            data = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            self.close()
            raise ConnectionError("the connection failed") from None
        if "connection: close" in head:
            self.close()
        return status, data

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def drive(
    url: str,
    clients: int,
    requests: list[bytes | list[int]],
    sentences: list[list[str]],
    expected: list[dict],
    max_seconds: float,
) -> dict[str, Any]:
    """Send ``requests`` (sentence positions, or a malformed body) from ``clients`` tasks."""
    statuses: Counter[str] = Counter()
    latencies, batches, tokens, lost = [], [], 0, 0
    inexact, wrong, largest = 0, 0, 0.0
    queue = iter(range(len(requests)))
    deadline = time.monotonic() + max_seconds
    host, port = url.removeprefix("http://").rsplit(":", 1)

    async def one_client() -> None:
        nonlocal tokens, lost, inexact, wrong, largest
        connection = Connection(host, int(port))
        for number in queue:
            if time.monotonic() > deadline:
                break
            item = requests[number]
            if isinstance(item, bytes):
                body = item
            else:
                body = json.dumps({"sentences": [sentences[p] for p in item]}).encode()
            start = time.perf_counter()
            try:
                status, data = await connection.post("/predict", body)
            except ConnectionError:
                lost += 1
                continue
            elapsed = time.perf_counter() - start
            statuses[f"{status // 100}xx"] += 1
            if isinstance(item, bytes) or status != 200:
                continue
            latencies.append(elapsed)
            answer = json.loads(data)
            batches.append(answer["batch_requests"])
            found = differences(answer["sentences"], [expected[p] for p in item])
            inexact, wrong = inexact + found[0], wrong + found[1]
            largest = max(largest, found[2])
            tokens += sum(len(sentences[p]) for p in item)
        connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    seconds = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": sum(statuses.values()) + lost,
        "statuses": dict(statuses),
        "lost": lost,
        "sentences_not_identical": inexact,
        "sentences_with_other_tags": wrong,
        "largest_confidence_difference": largest,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "batch_requests_mean": statistics.fmean(batches) if batches else 0.0,
        "batch_requests_max": max(batches, default=0),
    }
