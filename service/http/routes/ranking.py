"""``GET /label-studio/rank?project=ID``: a project's unlabelled tasks, least sure first.

Each task without a usable annotation is fetched (under service.labeling.fetch's rules),
segmented by the served model inside the same admission control as every request, and scored
with :func:`service.labeling.uncertainty.task_score`; the answer lists them by ascending score
(what to label next). Needs FCN_LABEL_STUDIO_URL (and its token).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from service import pipeline
from service.http.admission import AdmissionRefused
from service.http.errors import ApiError, error_responses, unavailable
from service.http.routes.label_studio import PREFIX, Models, _fetcher, _model
from service.http.state import get_service, require_api_key
from service.labeling.fetch import CODES, FetchError
from service.labeling.uncertainty import task_score
from service.loop.label_studio_api import LabelStudioUnreachable, fetch_export
from service.loop.tasks import annotated_tasks

router = APIRouter(prefix=PREFIX, tags=["label-studio"], dependencies=[Depends(require_api_key)])


def _score_one(loaded, data: bytes) -> float | None:
    engine = loaded.engine
    pixels, decode_ms = pipeline.decode(engine, data)
    seg = pipeline.infer(engine, pixels, decode_ms, needs=pipeline.Needs(confidence=True))
    return task_score(seg.mask, seg.confidence)


@router.get(
    "/rank",
    summary="Label Studio: unlabelled tasks, least sure first",
    responses=error_responses(
        {
            401: "missing or wrong API key",
            404: "unknown model",
            422: "a task image could not be read",
            502: "Label Studio unreachable",
            503: "busy; see Retry-After",
        }
    ),
)
async def rank(
    request: Request,
    models: Models,
    project: Annotated[int, Query(ge=1, description="Label Studio project id")],
    limit: Annotated[int, Query(ge=1, le=1000, description="tasks to score at most")] = 100,
    model: Annotated[str | None, Query(max_length=64)] = None,
    image_key: Annotated[str, Query(max_length=64)] = "image",
) -> dict:
    service = get_service(request)
    settings = service.settings
    if settings.label_studio_url is None:
        raise ApiError(422, "no_label_studio", "set FCN_LABEL_STUDIO_URL to rank its tasks")
    loaded = _model(models, model)
    token = settings.label_studio_token
    try:
        export = await asyncio.to_thread(
            fetch_export,
            settings.label_studio_url,
            token.get_secret_value() if token else None,
            project,
            settings.label_studio_timeout_s,
            all_tasks=True,
        )
    except LabelStudioUnreachable as exc:
        raise ApiError(502, "label_studio_unreachable", str(exc)) from None
    done = {t.task_id for t in annotated_tasks(export)}
    todo = [t for t in export if t["id"] not in done][:limit]
    fetcher = _fetcher(service)
    scored = []
    try:
        with service.admission.accepted():
            for task in todo:
                url = (task.get("data") or {}).get(image_key)
                data = await asyncio.to_thread(fetcher.fetch, url)
                score = await service.admission.run(_score_one, loaded, data)
                scored.append({"id": task["id"], "score": score})
    except AdmissionRefused as rejected:
        raise unavailable(rejected, settings.retry_after_s) from None
    except FetchError as exc:
        raise ApiError(CODES[exc.code], exc.code, f"task {task['id']}: {exc.message}") from None
    scored.sort(key=lambda t: (t["score"] is None, t["score"] or 0.0))
    return {"model_version": loaded.version, "unlabelled": len(export) - len(done), "tasks": scored}
