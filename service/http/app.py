"""``create_app(settings)``: the FastAPI app of ``fcn serve``, models loaded in its lifespan."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fcn import __version__
from service.engine import EngineConfig
from service.http import errors
from service.http.admission import Admission
from service.http.metrics import MetricsMiddleware, ServiceMetrics, StaticMount
from service.http.reload import load_checked
from service.http.routes import (
    docs,
    health,
    jobs,
    label_studio,
    metrics,
    models,
    oip,
    preview,
    ranking,
    segment,
    versions,
)
from service.http.served_models import ServedModels
from service.http.settings import Settings, get_settings
from service.http.state import ServiceState
from service.http.training import build_loop
from service.models import model_sources

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"


def engine_config(settings: Settings) -> EngineConfig:
    """The engine settings the service's limits and thread counts map onto."""
    return settings.engine_config()


def load_models(settings: Settings) -> ServedModels:
    """Resolve, load and check (a warm-up run) the configured models (the bundled default
    when none is named); the same check a reload runs.

    Raises:
        ModelError: a model does not load or fails its check.
    """
    sources = model_sources(settings.models, settings.models_dir)
    config = settings.engine_config()
    return ServedModels([load_checked(s, config) for s in sources], settings.default_model)


def start_jobs(service: ServiceState):
    """The job API's runner on ``FCN_JOBS_DIR`` (recovering what a previous process left)."""
    from service.jobs.runner import JobRunner
    from service.jobs.store import JobStore

    def served(name: str):
        return service.models.get(name) if service.models is not None else None

    runner = JobRunner(JobStore(service.settings.jobs_dir), served, service.settings.concurrency)
    runner.start()
    service.metrics.watch_jobs(runner)
    logger.info("job API on %s", runner.store.root)
    return runner


class PageMount(StaticMount):
    """The static page at ``/``, stepping aside for the API's own paths.

    A plain mount at ``/`` matches every path, so ``GET /v1/segment`` would reach the file
    server (404) instead of the route that only takes POST (405). Paths under the API's
    prefixes (templated ones like ``/v2/models/{name}/infer`` too) are never the page's.
    """

    API_PREFIXES = ("/v1/", "/v2/", "/label-studio/")

    def __init__(self, path: str, app: StaticFiles, api_paths: frozenset[str], name: str):
        super().__init__(path, app=app, name=name)
        self.api_paths = api_paths

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if path in self.api_paths or path.startswith(self.API_PREFIXES):
            return Match.NONE, {}
        return super().matches(scope)


class ReplicaHeader:
    """Adds ``X-Replica: NAME`` to every HTTP response: which replica answered, behind a balancer."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.header = (b"x-replica", name.encode("latin-1", "replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Models load when it starts (lifespan), not here.

    Args:
        settings: defaults to :func:`get_settings` (the ``FCN_*`` environment).
    """
    settings = settings or get_settings()
    admission = Admission(settings.concurrency, settings.max_queue, settings.queue_timeout_s)
    service = ServiceState(settings, admission, ServiceMetrics(admission))
    service.training = build_loop(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.models = await asyncio.to_thread(load_models, settings)
        admission.start()
        logger.info(
            "serving %s (default %s): concurrency %d x %d intra-op thread(s), queue %d",
            ", ".join(service.models.models),
            service.models.default,
            settings.concurrency,
            settings.resolved_intra_op_threads,
            settings.max_queue,
        )
        if settings.jobs_dir is not None:
            service.jobs = await asyncio.to_thread(start_jobs, service)
        try:
            yield
        finally:
            if service.jobs is not None:  # stops between strips: the job resumes next start
                await asyncio.to_thread(service.jobs.stop)
            if service.training is not None:
                service.training.stop()
            admission.stop()

    app = FastAPI(
        title="fcnseg",
        version=__version__,
        summary="Semantic segmentation: POST an image, get its mask.",
        lifespan=lifespan,
        docs_url=None,  # served from the package's assets by routes.docs, not from a CDN
        redoc_url=None,
    )
    app.state.service = service
    errors.install(app)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    if settings.replica_header:
        app.add_middleware(ReplicaHeader, name=socket.gethostname())
    routers = [module.router for module in (health, models, segment, preview, metrics, oip, jobs)]
    routers += [oip.keyed, label_studio.router, label_studio.named, ranking.router, versions.router]
    for router in routers:
        app.include_router(router)
    own = [route for router in routers for route in router.routes]
    app.state.api_routes = own  # what a 405's Allow header lists (service.http.errors)
    docs.install(app)
    web_dir = settings.web_dir or WEB_DIR
    if web_dir.is_dir():  # the page ships with the package; a bare API is fine without it
        api_paths = frozenset(r.path for r in [*app.routes, *own] if isinstance(r, Route))
        page = PageMount("/", StaticFiles(directory=web_dir, html=True), api_paths, name="web")
        app.router.routes.append(page)
    else:
        logger.warning("no web page folder at %s: serving the API only", web_dir)
    return app
