"""A site's object store: a threaded HTTP server for one data directory.

Started inside a site's namespace and bound to the site's own address, so any
reader in another namespace (a misplaced worker, the client reading metadata)
crosses the router and is shaped and counted there. Serves ``GET``/``HEAD``
with ``Content-Length`` (what fsspec's HTTP filesystem needs for zarr chunks)
and single ``Range`` requests. Stops by itself after ``--max-seconds``.

Body bytes sent are tallied by the requester's ``X-Reader-Site`` header
(benchmark workers send it via ``FSSPEC_HTTP``; a request without it counts as
``"client"``). ``GET /__stats__`` returns the tallies as JSON and
``GET /__stats__?reset=1`` also zeroes them.

Prints ``ready <host>:<port>`` on stdout once listening.

Usage: ``python -m benchmarks.httpserve --dir DATA --bind 10.250.1.2 --port 8000``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import logging
import os
import re
import signal
import sys
import threading
from typing import Any

logger = logging.getLogger(__name__)

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")


READER_HEADER = "X-Reader-Site"
_STATS: dict[str, int] = {}
_STATS_LOCK = threading.Lock()


def _tally(reader: str, nbytes: int) -> None:
    with _STATS_LOCK:
        _STATS[reader] = _STATS.get(reader, 0) + nbytes


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range support, reader tallies, no request logs."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle +
    # delayed ACK stall every small response on a kept-alive connection ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logs."""

    def do_GET(self) -> None:
        """Serve a file (tallying body bytes by reader) or ``/__stats__``."""
        if self.path.startswith("/__stats__"):
            with _STATS_LOCK:
                body = json.dumps(_STATS).encode()
                if "reset=1" in self.path:
                    _STATS.clear()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        f = self.send_head()
        if f:
            reader = self.headers.get(READER_HEADER, "client")
            n = 0
            try:
                n = self._send_body(f)
            finally:
                f.close()
                _tally(reader, n)

    def _send_body(self, f: Any) -> int:
        """Send the body with ``sendfile`` (no copy through Python); return bytes sent.

        The headers (with ``Content-Length``) were already written unbuffered.
        """
        raw = f.f if isinstance(f, _Limited) else f
        try:
            raw.fileno()
        except (AttributeError, OSError, ValueError):  # a directory listing (BytesIO)
            n = 0
            while chunk := f.read(256 * 1024):
                self.wfile.write(chunk)
                n += len(chunk)
            return n
        if isinstance(f, _Limited):
            offset, count = raw.tell(), f.n
        else:
            offset, count = 0, os.fstat(raw.fileno()).st_size
        sent = 0
        while sent < count:
            n = os.sendfile(self.connection.fileno(), raw.fileno(), offset + sent, count - sent)
            if n == 0:  # file shrank under us: nothing more to send
                break
            sent += n
        return sent

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Like the base class, but a 404/416 keeps the connection open.

        The base class always answers ``Connection: close``; zarr probes for
        absent metadata files (``.zgroup``, ``.zmetadata``...) on every open, so
        each open would otherwise pay a new TCP handshake (one more RTT) per probe.
        """
        if code not in (404, 416) or self.close_connection or not self.command:
            super().send_error(code, message, explain)
            return
        body = f"{code} {message or ''}\n".encode()
        self.send_response(code, message)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_head(self) -> Any:
        """Like the base class, plus ``Range: bytes=a-b`` on regular files."""
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not rng or not os.path.isfile(path):
            return super().send_head()
        m = _RANGE_RE.match(rng.strip())
        size = os.path.getsize(path)
        if not m or (not m.group(1) and not m.group(2)):
            return super().send_head()
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:
            start, end = max(0, size - int(m.group(2))), size - 1
        if start >= size or end < start:
            self.send_error(416, "Requested Range Not Satisfiable")
            return None
        f = open(path, "rb")  # noqa: SIM115 - closed by do_GET
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return _Limited(f, end - start + 1)


class _Limited:
    """File wrapper that reads at most ``n`` bytes (for range responses)."""

    def __init__(self, f: Any, n: int) -> None:
        self.f, self.n = f, n

    def read(self, size: int = -1) -> bytes:
        if self.n <= 0:
            return b""
        size = self.n if size < 0 else min(size, self.n)
        data = self.f.read(size)
        self.n -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


class Server(http.server.ThreadingHTTPServer):
    """Threaded server; daemon threads so a stop never hangs on a client."""

    daemon_threads = True
    request_queue_size = 128


def serve(directory: str, bind: str, port: int, max_seconds: float) -> None:
    """Serve ``directory`` on ``bind:port`` until ``max_seconds`` pass or SIGTERM."""
    handler = functools.partial(Handler, directory=directory)
    server = Server((bind, port), handler)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    print(f"ready {bind}:{server.server_address[1]}", flush=True)
    stop.wait(max_seconds)
    server.shutdown()
    server.server_close()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-seconds", type=float, default=900.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="httpserve: %(message)s", stream=sys.stderr)
    serve(args.dir, args.bind, args.port, args.max_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
