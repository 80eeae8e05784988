"""Every error the service sends is JSON ``{"error": {"code": ..., "message": ...}}``.

Routes and dependencies raise :class:`ApiError`; the engine underneath raises the typed
exceptions of :mod:`service.errors`, mapped here to a status and a code. Starlette's own 404/405
and FastAPI's 422 validation errors get the same shape, and anything unexpected becomes a logged
500 whose body says nothing about the internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from service.errors import (
    CorruptImageError,
    GeoDependencyError,
    GeoInputError,
    ImageError,
    ImageTooLargeError,
    JobPathError,
    JobsDisabledError,
    ModelError,
    UnknownJobError,
    UnsupportedFormatError,
)
from service.http.admission import AdmissionRefused

logger = logging.getLogger(__name__)

# Engine/decoder exception -> (status, code). Order matters: subclasses first.
ENGINE_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (ImageTooLargeError, 413, "image_too_large"),
    (GeoDependencyError, 422, "geo_extra_missing"),
    (GeoInputError, 422, "georeference"),
    (UnsupportedFormatError, 415, "unsupported_image"),
    (CorruptImageError, 400, "corrupt_image"),
    (ImageError, 400, "bad_image"),
    (ModelError, 500, "model_error"),
    (UnknownJobError, 404, "unknown_job"),
    (JobPathError, 403, "path_not_allowed"),
    (JobsDisabledError, 503, "jobs_disabled"),
)

# Codes for statuses Starlette raises itself (unknown path, wrong method, ...).
STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error answer (documented in the OpenAPI schema)."""

    error: ErrorDetail


def error_responses(described: Mapping[int, str]) -> dict[int, dict]:
    """OpenAPI ``responses`` entries with the error body for each status."""
    return {status: {"model": ErrorBody, "description": text} for status, text in described.items()}


class ApiError(Exception):
    """An error answer: HTTP status, a stable machine-readable code and a human message."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def from_engine_error(exc: Exception) -> ApiError:
    """Map a :mod:`service.errors` exception to its :class:`ApiError`."""
    for kind, status, code in ENGINE_ERRORS:
        if isinstance(exc, kind):
            message = str(exc)
            if kind is ModelError:  # the operator's problem: the log has it, the client not
                logger.error("model failure: %s", message)
                message = "the model failed on this input; the operator has the details in the log"
            return ApiError(status, code, message)
    raise TypeError(f"not an engine error: {exc!r}")


def unavailable(rejected: AdmissionRefused, retry_after_s: int) -> ApiError:
    """503 for a request refused by admission control, with ``Retry-After``."""
    return ApiError(503, rejected.reason, rejected.message, {"Retry-After": str(retry_after_s)})


# Paths of the Open Inference Protocol (routes/oip.py), whose errors have that protocol's shape.
OIP_PREFIX = "/v2"


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    path: str = "",
) -> JSONResponse:
    """The error body: ``{"error": {"code", "message"}}``, or on the Open Inference Protocol's
    paths its own ``{"error": message}`` (with ``code`` beside it)."""
    if path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/"):
        body: dict = {"error": message, "code": code}
    else:
        body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", ""))
    return "; ".join(parts) or "invalid request"


def _allowed_methods(request: Request) -> str:
    """The methods of the path template a 405 matched. Starlette names only the first route
    whose path matched, but two routes (GET and POST) share ``/v1/jobs``: the first matching
    template decides (as in Starlette: ``/v1/models/reload`` before ``/v1/models/{name}``),
    and every route of that template adds its methods."""
    routes = [r for r in getattr(request.app.state, "api_routes", ()) if isinstance(r, Route)]
    template = next((r.path for r in routes if r.matches(request.scope)[0] is not Match.NONE), None)
    methods = {m for r in routes if r.path == template for m in (r.methods or ())}
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape above."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        request.state.error_code = exc.code
        return error_response(exc.status, exc.code, exc.message, exc.headers, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        headers = exc.headers
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
            headers = {**(exc.headers or {}), "Allow": _allowed_methods(request)}
        else:
            message = str(exc.detail)
        request.state.error_code = code
        return error_response(exc.status_code, code, message, headers, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.state.error_code = "validation_error"
        return error_response(
            422, "validation_error", _validation_message(exc), path=request.url.path
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        request.state.error_code = "internal_error"
        return error_response(500, "internal_error", "internal server error", path=request.url.path)
