"""Network faults: a TCP forwarder in front of a Redis that a test takes down and brings back, and free ports."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's choice), for a child to listen on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `down()` closes the listener and every connection
    (clients see refused connections); `up()` listens again on the same port.

        proxy = TcpProxy.for_redis_url(settings.CELERY_BROKER_URL)
        bridge = processes.start_bridge(env={"CELERY_BROKER_URL": proxy.url})
        proxy.down(); ...; proxy.up()
        proxy.close()
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        self._url_template: str | None = None
        self.up()

    @classmethod
    def for_redis_url(cls, url: str) -> TcpProxy:
        parts = urlsplit(url)
        proxy = cls(parts.hostname or "127.0.0.1", parts.port or 6379)
        netloc = f"{parts.username}@" if parts.username else ""
        proxy._url_template = urlunsplit((parts.scheme, f"{netloc}127.0.0.1:{proxy.port}", parts.path, "", ""))
        return proxy

    @property
    def url(self) -> str:
        assert self._url_template, "use TcpProxy.for_redis_url to get a URL"
        return self._url_template

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self.down()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select(timeout=1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            sel.close()
            with self._lock:
                self._conns.discard(a)
                self._conns.discard(b)
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()


@pytest.fixture
def broker_proxy() -> Iterator[TcpProxy]:
    """A TcpProxy in front of the Celery broker's Redis; closed at teardown."""
    proxy = TcpProxy.for_redis_url(settings.CELERY_BROKER_URL)
    try:
        yield proxy
    finally:
        proxy.close()
