"""The emulator's own capacity: kept-alive clients in parallel processes, bodies discarded.

Each of ``--processes`` workers opens one ``http.client`` connection and reads its share of
the deployment's windows of 249 lines (window ``i`` goes to worker ``i % processes``). The
time runs from the moment every worker is ready (forked, imports done) to the last answer,
so it excludes interpreter start-up: a ceiling, not a client. Prints one JSON object
``{"seconds": s, "lines": n, "requests": r}`` (lines are counted only with ``--verify``).

    QC_BASE_URL=... QC_USER_ID=... QC_API_TOKEN=... python bench/limit.py 1 --processes 4
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import time
from multiprocessing.synchronize import Barrier
from urllib.parse import urlsplit

from harness import auth_headers

WINDOW = 249


def succeeded(data: bytes) -> bool:
    """``"success": true`` in a JSON body, without parsing it (a cheap client)."""
    at = data.rfind(b'"success"')
    return at >= 0 and data[at + 9 : at + 20].lstrip(b": ").startswith(b"true")


def request(connection: http.client.HTTPConnection, path: str, payload: dict[str, object]) -> bytes:
    body = json.dumps(payload)
    headers = {"Content-Type": "application/json", **auth_headers(USER_ID, TOKEN)}
    connection.request("POST", path, body, headers)
    response = connection.getresponse()
    data = response.read()
    if response.status != 200 or not succeeded(data):
        raise SystemExit(f"{path}: HTTP {response.status}: {data[:200]!r}")
    return data


def worker(
    index: int,
    args: argparse.Namespace,
    deploy_id: str,
    length: int,
    ready: Barrier,
    results: multiprocessing.Queue[tuple[int, int]],
) -> None:
    url = urlsplit(BASE_URL)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
    ready.wait()
    lines = requests = 0
    for start in range(index * WINDOW, length, args.processes * WINDOW):
        payload = {
            "format": "json",
            "projectId": args.project_id,
            "algorithmId": deploy_id,
            "startLine": start,
            "endLine": start + WINDOW,
        }
        data = request(connection, f"{url.path}/live/logs/read", payload)
        requests += 1
        if args.verify:
            lines += len(json.loads(data)["logs"])
    connection.close()
    results.put((lines, requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project_id", type=int)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--verify", action="store_true", help="parse bodies and count lines")
    args = parser.parse_args()

    url = urlsplit(BASE_URL)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
    live = json.loads(request(connection, f"{url.path}/live/read", {"projectId": args.project_id}))
    probe = {
        "format": "json",
        "projectId": args.project_id,
        "algorithmId": live["deployId"],
        "startLine": 0,
        "endLine": 1,
    }
    length = json.loads(request(connection, f"{url.path}/live/logs/read", probe))["length"]
    connection.close()

    context = multiprocessing.get_context("fork")
    ready = context.Barrier(args.processes + 1)
    results: multiprocessing.Queue[tuple[int, int]] = context.Queue()
    workers = [
        context.Process(target=worker, args=(i, args, live["deployId"], length, ready, results))
        for i in range(args.processes)
    ]
    for process in workers:
        process.start()
    ready.wait()
    started = time.perf_counter()
    counts = [results.get() for _ in workers]
    seconds = time.perf_counter() - started
    for process in workers:
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"a worker failed with exit code {process.exitcode}")
    lines = sum(n for n, _ in counts)
    requests = sum(r for _, r in counts)
    print(json.dumps({"seconds": seconds, "lines": lines, "requests": requests}))


BASE_URL = os.environ["QC_BASE_URL"]
USER_ID = os.environ["QC_USER_ID"]
TOKEN = os.environ["QC_API_TOKEN"]

if __name__ == "__main__":
    main()
