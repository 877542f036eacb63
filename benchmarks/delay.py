"""Hold every queued packet for a fixed delay: WAN latency without netem.

Runs inside the router namespace, bound to an NFQUEUE that the router's
``FORWARD`` chain sends packets to
(``iptables -A FORWARD -j NFQUEUE --queue-num 0 --queue-bypass``). Each packet
is accepted ``--delay-ms`` after it arrived, in arrival order, so a packet that
crosses the router once in each direction sees a round trip of twice the delay.
The verdict is given after the callback returned (NetfilterQueue allows a
deferred verdict); only packet metadata is copied to user space.

Prints ``ready`` on stdout once bound; exits by itself after ``--max-seconds``
(remaining packets are accepted first) or on SIGTERM/SIGINT.

Usage: ``python -m benchmarks.delay --delay-ms 15 --max-seconds 600``.
Needs ``pip install NetfilterQueue`` (extra ``wan``) and ``libnetfilter-queue``.
"""

from __future__ import annotations

import argparse
import collections
import logging
import select
import signal
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)


def serve(queue: int, delay_s: float, max_seconds: float, max_len: int = 16384) -> dict[str, int]:
    """Delay packets of NFQUEUE ``queue`` by ``delay_s`` until ``max_seconds`` pass.

    Returns counts: ``packets`` delayed and ``max_held`` (largest backlog).
    """
    from netfilterqueue import COPY_META, NetfilterQueue

    held: collections.deque[tuple[float, Any]] = collections.deque()
    stats = {"packets": 0, "max_held": 0}
    stop = False

    def on_packet(pkt: Any) -> None:
        held.append((time.monotonic() + delay_s, pkt))

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    nfq = NetfilterQueue()
    # sock_len: room for the backlog of metadata-only messages.
    nfq.bind(queue, on_packet, max_len=max_len, mode=COPY_META, sock_len=8 * 1024 * 1024)
    fd = nfq.get_fd()
    end = time.monotonic() + max_seconds
    print("ready", flush=True)
    try:
        while not stop:
            now = time.monotonic()
            if now >= end:
                break
            while held and held[0][0] <= now:
                held.popleft()[1].accept()
                stats["packets"] += 1
            wait = min(end - now, held[0][0] - now if held else 0.5)
            try:
                readable, _, _ = select.select([fd], [], [], max(0.0, wait))
            except InterruptedError:
                continue
            if readable:
                nfq.run(block=False)
                stats["max_held"] = max(stats["max_held"], len(held))
    finally:
        while held:
            held.popleft()[1].accept()
        nfq.unbind()
    return stats


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queue", type=int, default=0)
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    p.add_argument("--max-seconds", type=float, default=600.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="delay: %(message)s", stream=sys.stderr)
    stats = serve(args.queue, args.delay_ms / 1000.0, args.max_seconds)
    logger.info("delayed %(packets)d packets, max backlog %(max_held)d", stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
