"""A TCP forwarder between a store and the PostgreSQL server, that a test can take down like the database.

``down()`` closes the listening socket and every forwarded connection: the
store's pooled connections are dead and a new one is refused, as when the
server or the network between goes away. Real sockets and a real server;
nothing of the driver is replaced.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import sqlalchemy as sa


class TcpProxy:
    """Forwards 127.0.0.1:``port`` (a free one) to ``upstream`` until ``down()``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def route(self, url: str) -> str:
        """``url`` with its host and port replaced by this proxy's."""
        return sa.make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # down()
                return
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut every forwarded one."""
        with suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone would not
        with suppress(OSError):
            self._server.close()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with suppress(OSError):
                    sock.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def tcp_proxy(url: str) -> Iterator[TcpProxy]:
    """A proxy to the server of ``url``, taken down at the end if not before."""
    parsed = sa.make_url(url)
    proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    try:
        yield proxy
    finally:
        proxy.down()
