"""A loopback TCP proxy that can partition the network: the gateway talks to the broker through it.

``partition()`` resets every open connection and refuses new ones (accepted, then closed at once,
like a firewall sending RST); ``heal()`` forwards again. Everything runs on one asyncio loop in a
daemon thread, bound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port`` until partitioned."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self.refused = 0
        self._open = True
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(self._client, sock=sock)
        self.port = int(sock.getsockname()[1])

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        self._reset_all()
        await self._server.wait_closed()

    def _reset_all(self) -> None:
        for w in list(self._writers):
            sock = w.get_extra_info("socket")
            if sock is not None:  # RST instead of FIN: a dead link, not a polite close
                with contextlib.suppress(OSError):
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
            w.close()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            self.refused += 1
            self._writers.add(writer)
            self._reset_all_one(writer)
            return
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            writer.close()
            return
        self.accepted += 1
        self._writers.update((writer, up_w))
        await asyncio.gather(
            self._pipe(reader, up_w), self._pipe(up_r, writer), return_exceptions=True
        )

    def _reset_all_one(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while self._open and dst in self._writers:
                data = await src.read(65536)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        finally:
            self._writers.discard(dst)
            dst.close()

    def partition(self) -> None:
        """Cut every connection now and refuse new ones until :meth:`heal`."""

        def cut() -> None:
            self._open = False
            self._reset_all()

        self._loop.call_soon_threadsafe(cut)

    def heal(self) -> None:
        """Forward new connections again."""

        def go() -> None:
            self._open = True

        self._loop.call_soon_threadsafe(go)
