"""The HTTP floor of ``seqtag serve``: LitServe answering without a model, under the same load.

    python benchmarks/serving_floor.py [--sentences 2077] [--requests 3000]
        [--max-seconds 60] [--concurrency 1 8 64] [--max-batch-size 32]
        [--output benchmarks/serving_floor.json]

Issue 27 asks ``seqtag serve`` for 0.7x the ``tag()`` ceiling at 64 clients sending one
sentence per request. This measures what the serving stack alone allows on this machine: a
LitServe server configured as ``seqtag serve`` is (one batched worker, ``fast_queue``, the same
``max_batch_size``) whose worker does no tagging at all (it answers each sentence with ``X``
tags), driven by the same client (``http_load.py``) with the same EWT test sentences. Its
tokens/s is an upper bound for any LitServe tagger on this machine with this client: if it is
below 0.7x ``tag()``, the target cannot be met by changing seqtag's part of the server.

Writes the numbers to ``--output`` and prints them next to ``serving.json``'s ceiling and
seqtag's own numbers when that file exists.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from http_load import drive  # beside this script
from null_server import null_answer
from serving import free_port, read_sentences, scenario_requests, tree_cpu_seconds, wait_ready

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=2077, help="EWT test sentences")
    parser.add_argument("--requests", type=int, default=3000, help="per scenario, at most")
    parser.add_argument("--max-seconds", type=float, default=60, help="per scenario, at most")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "serving_floor.json")
    args = parser.parse_args()
    sentences = read_sentences(args.sentences)
    expected = [null_answer(sentence) for sentence in sentences]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(Path(__file__).with_name("null_server.py")), str(port)]
    command.append(str(args.max_batch_size))
    server = subprocess.Popen(command, start_new_session=True)
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}}
    try:
        results["startup_seconds"] = wait_ready(url, server)
        warm = scenario_requests(200, 1, len(sentences))
        asyncio.run(drive(url, 8, warm, sentences, expected, args.max_seconds))
        results["scenarios"] = []
        for clients in args.concurrency:
            plan = scenario_requests(args.requests, 1, len(sentences))
            server_cpu, client_cpu = tree_cpu_seconds(server.pid), sum(os.times()[:2])
            found = asyncio.run(drive(url, clients, plan, sentences, expected, args.max_seconds))
            found["server_cpu_seconds"] = tree_cpu_seconds(server.pid) - server_cpu
            found["client_cpu_seconds"] = sum(os.times()[:2]) - client_cpu
            found["requests_per_s"] = found["requests"] / found["seconds"]
            results["scenarios"].append(found)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    results["machine"] = {
        "cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    served = _seqtag_numbers()
    print(f"{'clients':>7} {'floor tok/s':>12} {'floor req/s':>12} {'seqtag tok/s':>13}")
    for row in results["scenarios"]:
        mine = served.get(row["clients"], float("nan"))
        print(
            f"{row['clients']:>7} {row['tokens_per_s']:>12,.0f} {row['requests_per_s']:>12,.0f} "
            f"{mine:>13,.0f}"
        )
    ceiling = _ceiling()
    if ceiling:
        print(f"tag() ceiling (serving.json): {ceiling:,.0f} tokens/s; 0.7x = {0.7 * ceiling:,.0f}")


def _serving_json() -> dict[str, Any]:
    path = REPO / "benchmarks" / "serving.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _seqtag_numbers() -> dict[int, float]:
    scenarios = _serving_json().get("scenarios", [])
    return {
        row["clients"]: row["tokens_per_s"]
        for row in scenarios
        if row.get("sentences_per_request") == 1
    }


def _ceiling() -> float | None:
    return _serving_json().get("ceiling", {}).get("tokens_per_s")


if __name__ == "__main__":
    main()
