"""Run an app under uvicorn, draining on SIGTERM/SIGINT instead of stopping at once.

On the first signal: readiness turns false and new work gets 503 (``Admission.start_draining``)
while the listener stays open, so a load balancer sees the pod leave rather than connections
refused; queued and in-flight requests finish. Once none are left (and at least
``drain_delay_s`` has passed), or when ``shutdown_grace_s`` runs out, uvicorn shuts down. A
second signal stops at once.

SIGHUP reloads the models without downtime (:mod:`service.http.reload`), like
``POST /v1/models/reload``; the outcome goes to the log and the ``fcn_model_reloads`` metric.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.http.admission import Admission
from service.http.reload import ReloadFailed, reload_models
from service.http.settings import Settings
from service.http.slow_clients import guarded_h11

logger = logging.getLogger(__name__)

# What uvicorn gets after draining: time to flush responses and close idle connections.
_CLOSE_TIMEOUT_S = 2.0


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` whose exit signal starts a drain (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, settings: Settings) -> None:
        super().__init__(config)
        self.service = app.state.service
        self.admission: Admission = self.service.admission
        self._reloads: set[asyncio.Task] = set()
        self.grace_s = settings.shutdown_grace_s
        self.drain_delay_s = settings.drain_delay_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the main thread (the event loop's) between bytecodes: only set flags here.
        if self.admission.draining:
            logger.warning("second signal %s: stopping now", signal.Signals(sig).name)
            self.should_exit = True
            self.force_exit = True
            return
        logger.info(
            "signal %s: draining (not ready, new work refused) for at most %.0f s",
            signal.Signals(sig).name,
            self.grace_s,
        )
        self.admission.start_draining()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # What is loaded by now (modules, models) lives as long as the process: take it out
            # of the collector's reach. A full collection runs in the event-loop thread and
            # walked ~76,000 objects, 25-36 ms in which nothing was answered (a 44 ms 503 in
            # the overload bench); with them frozen it takes ~1 ms.
            gc.collect()
            gc.freeze()
            try:
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
            except (NotImplementedError, RuntimeError, ValueError, AttributeError):
                logger.warning("no SIGHUP here (not the main thread, or not POSIX): reload by HTTP")

    def _on_sighup(self) -> None:
        if self.admission.draining:
            logger.info("SIGHUP while draining: not reloading")
            return
        logger.info("SIGHUP: reloading the models")
        task = asyncio.get_running_loop().create_task(self._reload())
        self._reloads.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> None:
        try:
            outcomes = await reload_models(self.service)
        except ReloadFailed as exc:
            logger.error("SIGHUP reload: nothing was reloaded: %s", exc)
            return
        failed = [o.name for o in outcomes if o.status == "failed"]
        if failed:
            logger.error("SIGHUP reload: %s failed; their old versions still serve", failed)

    async def on_tick(self, counter: int) -> bool:
        started = self.admission.drain_started
        if started is not None and not self.should_exit:
            elapsed = time.monotonic() - started
            if self.admission.idle and elapsed >= self.drain_delay_s:
                logger.info("drained in %.1f s; shutting down", elapsed)
                self.should_exit = True
            elif elapsed >= self.grace_s:
                logger.warning(
                    "grace period over with %d running and %d queued; shutting down",
                    self.admission.active,
                    self.admission.queued,
                )
                self.should_exit = True
                self.force_exit = True
            if self.should_exit:
                self.config.timeout_graceful_shutdown = _CLOSE_TIMEOUT_S
        return await super().on_tick(counter)


def serve(app: FastAPI, settings: Settings) -> int:
    """Serve ``app`` on ``settings.host:port`` until a signal drains it. Returns an exit code."""
    admission: Admission = app.state.service.admission
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=_CLOSE_TIMEOUT_S,
        http=guarded_h11(settings.header_timeout_s),  # h11 + a deadline for headers
        # the app's own lifespan loads models; a failure there must stop the process
        lifespan="on",
    )
    server = DrainingServer(config, app, settings)
    server.run()
    if not server.started:
        return 3  # uvicorn logged why (a model that would not load, a port in use)
    if admission.active:
        # Threads still inside ONNX Runtime cannot be interrupted; do not wait for them.
        logger.warning("exiting with %d inference(s) unfinished", admission.active)
        logging.shutdown()
        os._exit(1)
    return 0
