"""A small closed-loop HTTP/1.1 load generator (a helper of benchmarks/throughput.py).

    python benchmarks/loadgen.py --url http://127.0.0.1:8000/v1/jobs --body body.json \
        --connections 64 --seconds 10 [--expect '"cache":"hit"']

Each of `--connections` keep-alive connections sends prebuilt POSTs (the `--body` files in turn;
give several for several images), reads the whole response (status line, headers, Content-Length
body), and sends the next one at once. Raw asyncio
streams on uvloop, no HTTP library: the client costs a small fraction of what the server spends
per request, so on a small machine the numbers measure the API, not the client. Prints one JSON
object: requests, per-status counts, accepted per second, latency percentiles, and how many
bodies contained `--expect`. The job ids of the answers are written to `--ids` (one a line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

_ID = re.compile(rb'"id":"([0-9a-f]{32})"')


async def _connection(host: str, port: int, requests: list[bytes], offset: int, start: float, stop: float,
                      warmup_end: float, out: dict, expect: bytes | None) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sent = offset
    try:
        while True:
            began = time.perf_counter()
            if began >= stop:
                return
            writer.write(requests[sent % len(requests)])
            sent += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            body = await reader.readexactly(length) if length else b""
            ended = time.perf_counter()
            match = _ID.search(body)
            if match:
                out["ids"].append(match.group(1))
            if began < warmup_end:
                continue
            out["statuses"][status] = out["statuses"].get(status, 0) + 1
            out["latencies"].append(ended - began)
            if expect is not None and expect in body:
                out["expected"] += 1
            if status >= 400 and len(out["errors"]) < 3:
                out["errors"].append(body[:300].decode(errors="replace"))
    finally:
        writer.close()


async def run(url: str, bodies: list[bytes], content_type: str, connections: int, seconds: float, warmup: float,
              expect: bytes | None, headers: dict[str, str]) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    requests = [(
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body for body in bodies]
    out: dict = {"statuses": {}, "latencies": [], "expected": 0, "errors": [], "ids": []}
    start = time.perf_counter()
    warmup_end = start + warmup
    stop = warmup_end + seconds
    await asyncio.gather(*(
        _connection(host, port, requests, i, start, stop, warmup_end, out, expect) for i in range(connections)
    ))
    ended = time.perf_counter()
    latencies = sorted(out["latencies"])

    def pct(p: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000, 2) if latencies else None

    accepted = sum(n for s, n in out["statuses"].items() if s in (200, 201, 202))
    # measured window: from the end of the warm-up to the last response (requests begun before `stop`)
    window = max(ended - warmup_end, 1e-9)
    return {
        "connections": connections,
        "seconds": round(window, 3),
        "requests": len(latencies),
        "statuses": {str(k): v for k, v in sorted(out["statuses"].items())},
        "accepted": accepted,
        "accepted_per_s": round(accepted / window, 1),
        "expected": out["expected"],
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "errors": out["errors"],
        "ids": [i.decode() for i in out["ids"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, type=Path, action="append", help="repeat for several bodies")
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--expect", default=None)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--ids", type=Path, default=None)
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    result = run_loop(run(args.url, [b.read_bytes() for b in args.body], args.content_type, args.connections, args.seconds,
                             args.warmup, args.expect.encode() if args.expect else None, headers))
    ids = result.pop("ids")
    if args.ids:
        args.ids.write_text("\n".join(ids))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
