"""Prometheus metrics of one app, in its own ``CollectorRegistry`` (many apps, no clashes).

Requests are counted by route *template* (``/v1/segment``, never the raw path, so an attacker
cannot blow up the label set), method and status; rejections by reason (the error code).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.admission import Admission
from service.jobs.store import STATUSES

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    """The instruments; ``registry`` is what ``/metrics`` renders."""

    def __init__(self, admission: Admission) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fcn_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "fcn_http_request_duration_seconds",
            "Time from request start to the end of the response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "fcn_inference_duration_seconds",
            "Model time per image (normalise, pad, run, crop, argmax)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            "fcn_model_reloads",
            "Models looked at by reloads, by outcome (unchanged, reloaded, added, removed, failed)",
            ["model", "outcome"],
            registry=r,
        )
        self.rejections = Counter(
            "fcn_rejections", "Requests refused, by reason (the error code)", ["reason"], registry=r
        )
        in_flight = Gauge(
            "fcn_inferences_in_flight", "Inferences running (at most the concurrency)", registry=r
        )
        in_flight.set_function(lambda: admission.active)
        queued = Gauge(
            "fcn_requests_queued", "Requests waiting for an inference to finish", registry=r
        )
        queued.set_function(lambda: admission.queued)
        accepted = Gauge(
            "fcn_requests_accepted",
            "Segment requests accepted and not yet answered (receiving, queued or running)",
            registry=r,
        )
        accepted.set_function(lambda: admission.accepted_count)
        concurrency = Gauge("fcn_concurrency", "Inferences allowed at once", registry=r)
        concurrency.set(admission.concurrency)
        # The old name of fcn_concurrency, kept for one release (CHANGELOG.md).
        old = Gauge("fcn_inference_slots", "Deprecated: use fcn_concurrency", registry=r)
        old.set(admission.concurrency)
        draining = Gauge("fcn_draining", "1 after SIGTERM while requests finish", registry=r)
        draining.set_function(lambda: float(admission.draining))

    def watch_jobs(self, runner) -> None:
        """Add the job API's metrics (read from ``runner`` at each scrape)."""
        self.registry.register(JobCollector(runner))


class JobCollector:
    """``fcn_jobs{status}``: jobs in the jobs folder; ``fcn_job_tiles_total``: windows run."""

    def __init__(self, runner) -> None:
        self.runner = runner

    def collect(self):
        jobs = GaugeMetricFamily(
            "fcn_jobs", "Jobs in the jobs folder, by status", labels=["status"]
        )
        counts = self.runner.counts()
        for status in STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        tiles = CounterMetricFamily("fcn_job_tiles", "Windows (tiles) run by jobs since the start")
        tiles.add_metric([], self.runner.tiles_run)
        yield tiles


class StaticMount(Mount):
    """A Mount of static files whose requests are counted under ``route="static"``.

    Starlette's Mount does not record itself in the scope (FastAPI's routes do), so without
    this its requests would be counted as ``unmatched``.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child = {**child, "route": self}
        return match, child


def route_label(scope: Scope, status: int | None = None) -> str:
    """The matched route's template; ``static`` for a file of the web page or the API docs'
    assets; ``unmatched`` otherwise (a path no route knows, or no such static file: 404)."""
    route = scope.get("route")
    if isinstance(route, Mount):
        return "unmatched" if status == 404 else "static"
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware: status, latency and rejection counting for every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_label(scope, status)
            m = self.metrics
            m.requests.labels(route, scope["method"], str(status)).inc()
            m.latency.labels(route).observe(time.perf_counter() - start)
            code = (scope.get("state") or {}).get("error_code")
            if status >= 400 and code:
                m.rejections.labels(code).inc()
