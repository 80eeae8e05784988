"""The image bytes of a request: multipart field ``image`` or a raw ``image/*`` body.

The body is counted while it streams in, so a chunked upload without ``Content-Length`` is cut
off at the cap just like one that declares its size (which is refused before reading).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from service.http.errors import ApiError

FIELD = "image"
# Raw bodies with these media types are taken as the image (its format is sniffed from bytes).
RAW_MEDIA_TYPES = ("application/octet-stream",)
HOW_TO_SEND = (
    f"send the image as multipart/form-data field '{FIELD}' "
    "or as the raw body with Content-Type image/*"
)


def too_large(max_bytes: int) -> ApiError:
    return ApiError(
        413, "body_too_large", f"the request body is larger than the limit of {max_bytes} bytes"
    )


def check_declared_length(request: Request, max_bytes: int) -> None:
    """Refuse at once a body whose ``Content-Length`` is over the cap.

    Raises:
        ApiError: 413 over the cap, 400 for a malformed header.
    """
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise ApiError(400, "bad_request", f"invalid Content-Length {declared!r}") from None
    if length > max_bytes:
        raise too_large(max_bytes)


def timed_out(seconds: float) -> ApiError:
    return ApiError(
        408,
        "body_timeout",
        f"the request body stopped arriving for {seconds:g} s; send it again",
        {"Connection": "close"},  # the rest of the body will not be read: free the connection
    )


async def _capped(
    request: Request, max_bytes: int, pause_s: float | None = None
) -> AsyncGenerator[bytes, None]:
    received = 0
    stream = request.stream()
    while True:
        try:
            chunk = await asyncio.wait_for(anext(stream), pause_s)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise timed_out(pause_s or 0.0) from None
        received += len(chunk)
        if received > max_bytes:
            raise too_large(max_bytes)
        yield chunk


async def read_body(request: Request, max_bytes: int, pause_s: float | None = None) -> bytes:
    """The whole request body, whatever its type, never holding more than ``max_bytes``.

    Raises:
        ApiError: 413 body over the cap, 400 malformed Content-Length, 408 body stalled.
    """
    check_declared_length(request, max_bytes)
    return b"".join([chunk async for chunk in _capped(request, max_bytes, pause_s)])


async def read_image(request: Request, max_bytes: int, pause_s: float | None = None) -> bytes:
    """Read the request's image bytes, never holding more than ``max_bytes`` of body.

    Args:
        pause_s: the longest wait for the next piece of the body (None: no limit).

    Raises:
        ApiError: 413 body over the cap, 415 neither multipart nor an image body,
            422 no image in the request, 400 malformed multipart, 408 body stalled.
    """
    check_declared_length(request, max_bytes)
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return await _read_multipart(request, max_bytes, pause_s)
    if media.startswith("image/") or media in RAW_MEDIA_TYPES:
        body = b"".join([chunk async for chunk in _capped(request, max_bytes, pause_s)])
        if not body:
            raise ApiError(422, "missing_image", f"the request body is empty; {HOW_TO_SEND}")
        return body
    if not media and request.headers.get("content-length") in (None, "0"):
        raise ApiError(422, "missing_image", f"the request has no image; {HOW_TO_SEND}")
    what = f"Content-Type {media!r}" if media else "no Content-Type"
    raise ApiError(415, "unsupported_media_type", f"got {what}; {HOW_TO_SEND}")


async def _read_multipart(request: Request, max_bytes: int, pause_s: float | None) -> bytes:
    parser = MultiPartParser(
        request.headers, _capped(request, max_bytes, pause_s), max_files=1, max_fields=8
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc.message}") from None
    try:
        item = form.get(FIELD)
        if item is None:
            fields = ", ".join(sorted(set(form.keys()))) or "none"
            raise ApiError(
                422,
                "missing_image",
                f"multipart field '{FIELD}' is missing (fields sent: {fields}); "
                f"e.g. curl -F {FIELD}=@photo.jpg",
            )
        if not isinstance(item, UploadFile):
            raise ApiError(
                422,
                "missing_image",
                f"multipart field '{FIELD}' must be a file part (with a filename); "
                f"e.g. curl -F {FIELD}=@photo.jpg",
            )
        data = await item.read()
        if not data:
            raise ApiError(422, "missing_image", f"multipart field '{FIELD}' is empty")
        return data
    finally:
        await form.close()


async def save_body(
    request: Request, path: Path, max_bytes: int, pause_s: float | None = None
) -> int:
    """Stream the request body into ``path`` piece by piece (never whole in memory).

    Returns:
        The bytes written.

    Raises:
        ApiError: 413 body over the cap, 400 malformed Content-Length, 408 body stalled.
    """
    check_declared_length(request, max_bytes)
    size = 0
    with open(path, "wb") as out:
        async for chunk in _capped(request, max_bytes, pause_s):
            out.write(chunk)
            size += len(chunk)
    return size
