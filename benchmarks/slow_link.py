"""A slow network link between an ssh client and its server: a TCP relay on 127.0.0.1 that gives
each direction a bandwidth and a one-way delay, and counts the bytes that cross it.

Each direction is a link of `rate` bytes/s: a chunk waits until the link is free, takes
len/rate seconds to cross it, and arrives `delay` seconds later (so a round trip is 2 x delay plus
the serialisation). The relay reads eagerly, so a burst queues in it as it would in a router's buffer.

    with SlowLink(target_port, mbit=10, rtt_ms=50) as link:
        ssh -p link.port ...            # link.received / link.sent: bytes server -> client / client -> server
"""

from __future__ import annotations

import collections
import socket
import threading
import time

PIECE = 4096  # bytes per scheduled piece: finer than a 64 KiB read, so a burst arrives as a stream


class _Direction:
    def __init__(self, src: socket.socket, dst: socket.socket, rate: float, delay: float):
        self.src, self.dst, self.rate, self.delay = src, dst, rate, delay
        self.bytes = 0
        self._queue: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self._closed = False
        self._link_free = 0.0
        threading.Thread(target=self._read, daemon=True, name="slow-link-read").start()
        threading.Thread(target=self._write, daemon=True, name="slow-link-write").start()

    def _read(self) -> None:
        try:
            while data := self.src.recv(65536):
                now = time.perf_counter()
                with self._ready:
                    for i in range(0, len(data), PIECE):
                        piece = data[i:i + PIECE]
                        start = max(now, self._link_free)
                        self._link_free = start + len(piece) / self.rate
                        self._queue.append((self._link_free + self.delay, piece))
                    self._ready.notify()
        except OSError:
            pass
        with self._ready:
            self._closed = True
            self._ready.notify()

    def _write(self) -> None:
        try:
            while True:
                with self._ready:
                    while not self._queue and not self._closed:
                        self._ready.wait()
                    if not self._queue:
                        break
                    due, piece = self._queue.popleft()
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                self.dst.sendall(piece)
                self.bytes += len(piece)
        except OSError:
            pass
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class SlowLink:
    def __init__(self, target_port: int, mbit: float = 10.0, rtt_ms: float = 50.0, host: str = "127.0.0.1"):
        self.target = (host, target_port)
        self.rate = mbit * 1e6 / 8
        self.delay = rtt_ms / 2000.0
        self._server = socket.create_server((host, 0))
        self.port = self._server.getsockname()[1]
        self._links: list[tuple[_Direction, _Direction]] = []
        threading.Thread(target=self._accept, daemon=True, name="slow-link-accept").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._links.append((_Direction(client, server, self.rate, self.delay),
                                _Direction(server, client, self.rate, self.delay)))

    @property
    def sent(self) -> int:
        """Bytes delivered client -> server so far, over every connection."""
        return sum(up.bytes for up, _ in self._links)

    @property
    def received(self) -> int:
        """Bytes delivered server -> client so far."""
        return sum(down.bytes for _, down in self._links)

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> "SlowLink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
