#!/usr/bin/env python3
"""Load and stream clients for bench/push.sh (standard library only: asyncio over raw HTTP/1.1).

lag  UPSTREAM RATE SECS FOLLOWER...  creates RATE blocks/s for SECS seconds on UPSTREAM and
     reads each FOLLOWER's event stream; prints, per follower, the lag from each 201 to the
     block's event on that follower (its commit), as JSON.
fan  URL STREAMS RATE SECS           opens STREAMS event streams on URL, then creates RATE
     blocks/s for SECS seconds; prints how many streams received every block, once, in order.
nopush PORT UPSTREAM                 a relay on 127.0.0.1:PORT to UPSTREAM that answers 404 to
     the event stream route, so a follower of it polls (as of an upstream without the route).
fanstreams URL STREAMS FIRST LAST     only the streams (a second process shares the load);
     ends when every stream has reached height LAST, or after a deadline.
"""

import asyncio
import json
import os
import re
import sys
import time
from urllib.parse import urlsplit

KEY = os.environ.get("BENCH_WRITE_KEY", "k")
BLOCK_ID = re.compile(rb"id: (\d+):[0-9a-f]*\nevent: block\n")


def hostport(url):
    u = urlsplit(url)
    return u.hostname, u.port


class Stream:
    """One Server-Sent Events stream: decodes chunked framing, yields `block` event heights."""

    def __init__(self, url, query="?thin=1"):
        self.url, self.query = url, query
        self.heights = []  # every block height received, in order
        self.times = {}  # height -> monotonic time it arrived (lag run only)
        self.keep_times = False
        self.ready = asyncio.Event()
        self.closed = False

    async def run(self):
        host, port = hostport(self.url)
        reader, writer = await asyncio.open_connection(host, port)
        # HTTP/1.0 when arrival times are not wanted: the reply is then close-delimited rather
        # than chunked, so one read carries many events and one regex scan (in C) finds their
        # ids. A thousand streams at 100 blocks/s are 100,000 events/s, and a per-chunk Python
        # loop would take the two cores from the server being measured.
        version = "1.1" if self.keep_times else "1.0"
        writer.write(
            f"GET /api/v1/events{self.query} HTTP/{version}\r\nHost: {host}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.split(b" ", 2)[1] == b"200":
            raise RuntimeError(f"stream refused: {head[:80]!r}")
        chunked = b"transfer-encoding: chunked" in head.lower()
        self.ready.set()
        text = b""
        try:
            while not self.keep_times and not chunked:
                data = await reader.read(262144)
                if not data:
                    return
                text += data
                cut = text.rfind(b"\n\n") + 2
                self.heights += map(int, BLOCK_ID.findall(text, 0, cut))
                text = text[cut:]
            while True:
                if chunked:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        break
                    data = await reader.readexactly(size + 2)
                    data = data[:-2]
                else:
                    data = await reader.read(65536)
                    if not data:
                        break
                now = time.monotonic()
                text += data
                frames = text.split(b"\n\n")
                text = frames.pop()
                for f in frames:
                    if b"event: block" not in f:
                        continue
                    i = f.find(b"id: ")
                    h = int(f[i + 4 : f.index(b":", i + 4)])
                    self.heights.append(h)
                    if self.keep_times:
                        self.times[h] = now
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed = True
            writer.close()


def body(i, tag):
    tx = {
        "tx_id": f"{tag}-{i}", "type": "data_storage", "from_address": "0xaaaa",
        "to_address": "0xbbbb", "value": 1, "fee": 0.01, "data": "x" * 200,
        "signature": f"s-{tag}-{i}",
    }
    return json.dumps({"transactions": [tx], "producer": "bench", "signature": f"b-{tag}-{i}"}).encode()


async def create_loop(url, rate, secs, tag, on_created):
    """Creates rate blocks/s on one keep-alive connection, on schedule (open loop)."""
    host, port = hostport(url)
    reader, writer = await asyncio.open_connection(host, port)
    start = time.monotonic()
    n = int(rate * secs)
    late = 0
    for i in range(n):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late += 1
        b = body(i, tag)
        writer.write(
            f"POST /api/v1/blocks HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b
        )
        head = await reader.readuntil(b"\r\n\r\n")
        at = time.monotonic()
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        reply = await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 201"):
            raise RuntimeError(f"create {i}: {head[:40]!r} {reply[:200]!r}")
        on_created(json.loads(reply)["height"], at)
    writer.close()
    return n, late


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def lag(upstream, rate, secs, followers):
    streams = [Stream(f) for f in followers]
    for s in streams:
        s.keep_times = True
    tasks = [asyncio.create_task(s.run()) for s in streams]
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in streams)), 30)
    created = {}
    n, late = await create_loop(upstream, rate, secs, f"lag{os.getpid()}", created.__setitem__)
    last = max(created)
    deadline = time.monotonic() + 60
    while any(last not in s.times for s in streams) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    out = {"blocks": n, "late_sends": late, "followers": []}
    for f, s in zip(followers, streams):
        lags = [(s.times[h] - t) * 1000 for h, t in created.items() if h in s.times]
        out["followers"].append({
            "url": f, "received": len(lags), "missing": len(created) - len(lags),
            "p50_ms": round(pct(lags, 50), 2) if lags else None,
            "p99_ms": round(pct(lags, 99), 2) if lags else None,
            "max_ms": round(max(lags), 2) if lags else None,
        })
    for t in tasks:
        t.cancel()
    print(json.dumps(out))


def verdict(streams, first, last):
    want = list(range(first, last + 1))
    complete = sum(1 for s in streams if s.heights == want)
    return {"streams": len(streams), "complete": complete, "first": first, "last": last,
            "refused_or_closed": sum(1 for s in streams if s.closed),
            "min_received": min((len(s.heights) for s in streams), default=0)}


async def open_streams(url, count):
    streams = [Stream(url) for _ in range(count)]
    tasks = []
    # Opened in batches so the listen backlog is never the limit.
    for i in range(0, count, 100):
        batch = streams[i : i + 100]
        tasks += [asyncio.create_task(s.run()) for s in batch]
        await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in batch)), 60)
    return streams, tasks


async def fan(url, count, rate, secs):
    streams, tasks = await open_streams(url, count)
    # Signals the shell that this process's streams are open (the other process waits too).
    print("open", flush=True, file=sys.stderr)
    created = {}
    n, late = await create_loop(url, rate, secs, f"fan{os.getpid()}", created.__setitem__)
    first, last = min(created), max(created)
    deadline = time.monotonic() + 120
    while any(not s.heights or s.heights[-1] < last for s in streams if not s.closed) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    out = verdict(streams, first, last)
    out.update({"blocks": n, "late_sends": late})
    for t in tasks:
        t.cancel()
    print(json.dumps(out))


async def fanstreams(url, count, first, last):
    streams, tasks = await open_streams(url, count)
    print("open", flush=True, file=sys.stderr)
    deadline = time.monotonic() + 600
    while any(not s.heights or s.heights[-1] < last for s in streams if not s.closed) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    print(json.dumps(verdict(streams, first, last)))
    for t in tasks:
        t.cancel()


async def nopush(port, upstream):
    host, uport = hostport(upstream)

    async def pipe(r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    async def serve(r, w):
        first = await r.read(65536)
        if first.startswith(b"GET /api/v1/events") or first.startswith(b"GET /api/v1/blocks/events"):
            w.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await w.drain()
            w.close()
            return
        ur, uw = await asyncio.open_connection(host, uport)
        uw.write(first)
        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def create(url, rate, secs, conns):
    """The fan-out run's writer, a process of its own so that no stream's reading delays it:
    `rate` creates/s spread over `conns` keep-alive connections (each open loop, on schedule)."""
    created = {}
    started = time.monotonic()
    results = await asyncio.gather(*(
        create_loop(url, rate / conns, secs, f"w{os.getpid()}-{c}", created.__setitem__)
        for c in range(conns)
    ))
    took = time.monotonic() - started
    n = sum(r[0] for r in results)
    print(json.dumps({"blocks": n, "late_sends": sum(r[1] for r in results),
                      "first": min(created), "last": max(created),
                      "seconds": round(took, 2), "achieved_per_s": round(n / took, 1)}))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "lag":
        asyncio.run(lag(args[0], float(args[1]), float(args[2]), args[3:]))
    elif mode == "fan":
        asyncio.run(fan(args[0], int(args[1]), float(args[2]), float(args[3])))
    elif mode == "nopush":
        asyncio.run(nopush(int(args[0]), args[1]))
    elif mode == "create":
        asyncio.run(create(args[0], float(args[1]), float(args[2]), int(args[3])))
    elif mode == "fanstreams":
        asyncio.run(fanstreams(args[0], int(args[1]), int(args[2]), int(args[3])))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
