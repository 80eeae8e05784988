"""What the routes share: settings, admission control, metrics and the loaded models."""

from __future__ import annotations

import asyncio
import base64
import hmac
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from service.http.admission import Admission
from service.http.errors import ApiError
from service.http.metrics import ServiceMetrics
from service.http.served_models import ServedModels
from service.http.settings import Settings


@dataclass
class ServiceState:
    """One per app, at ``app.state.service``; ``models`` is set by the lifespan."""

    settings: Settings
    admission: Admission
    metrics: ServiceMetrics
    models: ServedModels | None = None
    # Reloads run one at a time (service.http.reload); requests never wait for it.
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The labelling loop (service.http.training; None unless FCN_LABEL_STUDIO_TRAIN=1).
    training: Any = None
    # The job API's runner (service.jobs.runner; None unless FCN_JOBS_DIR is set).
    jobs: Any = None

    @property
    def ready(self) -> bool:
        return self.models is not None and not self.admission.draining


def get_service(request: Request) -> ServiceState:
    """Dependency: the app's :class:`ServiceState`."""
    return request.app.state.service


# The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency on its
# thread pool, two thread hand-offs (each waiting for the GIL, which the inference threads hold
# between ONNX Runtime calls) before a busy server can even answer 503.


async def loaded_models(request: Request) -> ServedModels:
    """Dependency: the loaded models (503 before the lifespan loaded them)."""
    models = get_service(request).models
    if models is None:
        raise ApiError(503, "not_ready", "models are still loading", {"Retry-After": "1"})
    return models


async def require_api_key(request: Request) -> None:
    """Dependency: with ``FCN_API_KEY`` set, require it as a Bearer token, ``X-API-Key`` or
    the password of Basic auth.

    Raises:
        ApiError: 401 when the key is missing or wrong.
    """
    expected = get_service(request).settings.api_key
    if expected is None:
        return
    given = request.headers.get("x-api-key", "")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if not given and scheme.lower() == "bearer":
        given = token.strip()
    elif not given and scheme.lower() == "basic":
        # For clients that can only send Basic auth (Label Studio's ML backend connection):
        # any user name, the key as the password.
        try:
            given = base64.b64decode(token.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            given = ""
    if not given or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY' "
            "(or Basic auth with the key as the password)",
            {"WWW-Authenticate": "Bearer"},
        )
