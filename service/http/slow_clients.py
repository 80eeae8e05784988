"""Uvicorn's h11 protocol with a deadline for request headers (slowloris).

Uvicorn times out idle keep-alive connections but not a client that opens a connection, sends
part of its headers and stalls: such a connection is held for ever, and enough of them exhaust
the process's file descriptors. :func:`guarded_h11` returns an ``H11Protocol`` subclass that
closes a connection whose request headers are not complete ``header_timeout_s`` after it opened
(or after its previous response), answering ``408`` with the service's JSON error body. Body
stalls are the app's business (``Settings.body_timeout_s``, :mod:`service.http.upload`).
"""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(
        {
            "error": {
                "code": "header_timeout",
                "message": f"the request headers did not arrive within {seconds:g} s",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _GuardedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # headers complete: the app has the request
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request's headers get the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        logger.info("closing a connection whose request headers stalled (%s)", self.client)
        self.transport.write(_timeout_response(self.header_timeout_s))
        self.transport.close()


def guarded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """An ``H11Protocol`` class closing connections whose headers take over ``header_timeout_s``."""
    return type(
        "GuardedH11Protocol", (_GuardedH11Protocol,), {"header_timeout_s": header_timeout_s}
    )
