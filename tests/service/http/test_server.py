"""``service.http.server``: what the uvicorn wrapper adds at start-up (draining: test_load.py)."""

from __future__ import annotations

import asyncio
import gc

import uvicorn

from service.http.app import create_app
from service.http.server import DrainingServer
from service.http.settings import Settings


def test_startup_freezes_what_is_loaded_out_of_the_collectors_reach(conv_model) -> None:
    # A full collection runs in the event-loop thread; over everything imported and loaded it
    # stalled every request for 25-36 ms (bench/reliability_bench.py overload).
    settings = Settings(models=[str(conv_model)], port=0, log_level="warning")
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = DrainingServer(config, app, settings)

    async def start_and_stop() -> int:
        config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup()
        try:
            assert server.started
            return gc.get_freeze_count()
        finally:
            await server.shutdown()

    gc.unfreeze()
    try:
        frozen = asyncio.run(start_and_stop())
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
    assert frozen > 10_000, frozen  # modules and the model's objects, not a handful
