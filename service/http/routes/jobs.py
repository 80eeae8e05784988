"""``/v1/jobs``: rasters too big for one request, segmented in the background.

Submit a raster from ``FCN_JOBS_DIR`` (JSON ``{"path": ...}``) or as the body, poll its
progress, fetch its outputs (with range requests), cancel it. The work is
:class:`service.jobs.runner.JobRunner`'s; these routes only translate (docs/gis-vectors.md).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError

from service.errors import ImageError, JobError, JobsDisabledError
from service.http.errors import ApiError, error_responses, from_engine_error
from service.http.job_schemas import (
    MAX_TOLERANCE_M,
    MEDIA_TYPES,
    Job,
    JobList,
    JobSpec,
    VectorCrs,
    VectorDriver,
    inline_schema,
    job_view,
)
from service.http.routes.segment import BandsQuery
from service.http.served_models import ServedModels
from service.http.state import get_service, loaded_models, require_api_key
from service.http.upload import read_body, save_body
from service.jobs.store import UPLOAD_NAME, JobRequest

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_api_key)])

SPEC_BYTES = 64 * 1024
UPLOAD_TYPES = ("image/tiff", "application/octet-stream")
REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": inline_schema(JobSpec)},
        **{media: {"schema": {"type": "string", "format": "binary"}} for media in UPLOAD_TYPES},
    },
}
_ERRORS = {401: "missing or wrong API key", 503: "the job API is off (set FCN_JOBS_DIR)"}
_UNKNOWN = {404: "no such job (or output)"}


async def job_runner(request: Request):
    """Dependency: the app's job runner, or 503 naming the setting that turns it on."""
    runner = get_service(request).jobs
    if runner is None:
        raise from_engine_error(
            JobsDisabledError(
                "the job API is off: start the service with FCN_JOBS_DIR=/folder/of/rasters "
                "(or fcn serve --jobs-dir)"
            )
        )
    return runner


Runner = Annotated[object, Depends(job_runner)]


async def _call(function, *args):
    """Run a store/runner call on a thread, its typed errors as their statuses."""
    try:
        return await asyncio.to_thread(function, *args)
    except (ImageError, JobError) as exc:
        raise from_engine_error(exc) from None


def _spec_from_query(model, bands, rescale, probabilities, vectors, tolerance, crs) -> JobSpec:
    from service.bands import parse_bands

    try:
        parsed = parse_bands(bands)
        lo_hi = tuple(float(v) for v in rescale.split(",")) if rescale else None
        vector = {"driver": vectors, "tolerance_m": tolerance, "crs": crs} if vectors else None
        return JobSpec(
            path=UPLOAD_NAME,
            model=model,
            bands=list(parsed) if parsed else None,
            rescale=lo_hi,
            probabilities=probabilities,
            vectors=vector,
        )
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    except ValueError as exc:
        raise ApiError(422, "validation_error", str(exc)) from None


async def _spec_from_json(request: Request, query_given: bool) -> JobSpec:
    if query_given:
        raise ApiError(
            422, "validation_error", "a JSON job names its options in the body, not the query"
        )
    body = await read_body(request, SPEC_BYTES, get_service(request).settings.body_timeout_s)
    try:
        return JobSpec.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


@router.post(
    "/v1/jobs",
    status_code=202,
    summary="Submit a raster job",
    description='JSON `{"path": ...}` names a raster under FCN_JOBS_DIR; or send the '
    "raster as the body (`Content-Type: image/tiff`) with the options in the query. "
    "Answers 202 at once; poll the `Location`.",
    response_model=Job,
    responses=error_responses(
        {
            **_ERRORS,
            400: "malformed body",
            403: "the path leads outside FCN_JOBS_DIR",
            404: "unknown model",
            408: "the body stalled",
            413: "upload over FCN_JOBS_MAX_UPLOAD_BYTES",
            415: "not a raster GDAL reads, or a body that is neither JSON nor a raster",
            422: "a bad option, no such file, not georeferenced, bands or rescale that do "
            "not fit the model, or the geo extra is missing",
        }
    ),
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def submit(
    request: Request,
    runner: Runner,
    models: Annotated[ServedModels, Depends(loaded_models)],
    model: Annotated[str | None, Query(max_length=64, description="upload: model")] = None,
    bands: BandsQuery = None,
    rescale: Annotated[
        str | None, Query(max_length=64, pattern=r"^[^,]+,[^,]+$", description="upload: MIN,MAX")
    ] = None,
    probabilities: Annotated[bool, Query(description="upload: probability COG too")] = False,
    vectors: Annotated[VectorDriver | None, Query(description="upload: vector format")] = None,
    vector_tolerance_m: Annotated[float, Query(ge=0.0, le=MAX_TOLERANCE_M)] = 0.0,
    vector_crs: Annotated[VectorCrs | None, Query(description="upload: wgs84 or native")] = None,
) -> JSONResponse:
    settings = get_service(request).settings
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    query = (model, bands, rescale, vectors, vector_crs)
    if media == "application/json":
        spec = await _spec_from_json(request, any(v is not None for v in query) or probabilities)
        path = await _call(runner.store.resolve_input, spec.path)
    elif media in UPLOAD_TYPES:
        spec = _spec_from_query(*query[:3], probabilities, vectors, vector_tolerance_m, vector_crs)
    else:
        what = f"Content-Type {media!r}" if media else "no Content-Type"
        raise ApiError(
            415,
            "unsupported_media_type",
            f'got {what}; send JSON {{"path": ...}} or the raster as image/tiff',
        )
    loaded = models.get(spec.model)
    if loaded is None:
        raise ApiError(404, "unknown_model", models.unknown(spec.model))
    job_id = runner.store.new()
    try:
        if media != "application/json":
            path = runner.store.folder / job_id / UPLOAD_NAME
            size = await save_body(
                request, path, settings.jobs_max_upload_bytes, settings.body_timeout_s
            )
            if size == 0:
                raise ApiError(422, "missing_image", "the request body is empty; send the raster")
        job = JobRequest(
            input=str(path),
            source="upload" if media != "application/json" else spec.path,
            model=loaded.name,
            model_version=loaded.version,
            bands=tuple(spec.bands) if spec.bands else None,
            rescale=spec.rescale,
            probabilities=spec.probabilities,
            vectors=spec.vectors.model_dump() if spec.vectors else None,
        )
        status = await _call(runner.add, job_id, job, loaded.engine.metadata.in_channels)
    except BaseException:
        runner.store.discard(job_id)
        raise
    body = job_view(status)
    return JSONResponse(body, status_code=202, headers={"Location": body["links"]["self"]})


@router.get(
    "/v1/jobs", summary="List the jobs", response_model=JobList, responses=error_responses(_ERRORS)
)
async def list_jobs(runner: Runner) -> dict:
    return {"jobs": [job_view(status) for status in await _call(runner.store.all)]}


@router.get(
    "/v1/jobs/{job_id}",
    summary="A job's status, progress and outputs",
    response_model=Job,
    responses=error_responses({**_ERRORS, **_UNKNOWN}),
)
async def get_job(job_id: str, runner: Runner) -> dict:
    return job_view(await _call(runner.store.read, job_id))


@router.get(
    "/v1/jobs/{job_id}/outputs/{name}",
    summary="Download an output (range requests supported)",
    response_class=FileResponse,
    responses={
        200: {"content": {media: {} for media in MEDIA_TYPES.values()}},
        206: {"description": "the requested byte range"},
        **error_responses({**_ERRORS, **_UNKNOWN, 416: "range not satisfiable"}),
    },
)
async def get_output(job_id: str, name: str, runner: Runner) -> FileResponse:
    path = await _call(runner.store.output, job_id, name)
    media = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media, filename=name)


@router.delete(
    "/v1/jobs/{job_id}",
    summary="Cancel a queued/running job, or delete a finished one",
    description="A queued or running job stops between strips, its files are deleted and it "
    "stays listed as `cancelled` (200); a finished one is removed with its files (204).",
    response_model=Job,
    responses={204: {"description": "deleted"}, **error_responses({**_ERRORS, **_UNKNOWN})},
)
async def delete_job(job_id: str, runner: Runner) -> Response:
    if await _call(runner.cancel, job_id) == "deleted":
        return Response(status_code=204)
    return JSONResponse(job_view(await _call(runner.store.read, job_id)))
