"""The one Label Studio REST call the loop makes: a project's tasks with their annotations.

``GET /api/projects/{id}/export?exportType=JSON`` with ``Authorization: Token ...`` (the legacy
API token, as the image fetcher sends it) answers the same JSON list as Export -> JSON in Label
Studio's interface. Only the configured address is ever asked (FCN_LABEL_STUDIO_URL).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class LabelStudioUnreachable(RuntimeError):
    """Label Studio did not answer, refused the token, or answered something else than JSON."""


def fetch_export(
    base_url: str, token: str | None, project: int, timeout_s: float, *, all_tasks: bool = False
) -> list[Any]:
    """The project's annotated tasks (a JSON export); ``all_tasks``: unlabelled ones too.

    Raises:
        LabelStudioUnreachable: connection error, timeout, an HTTP error status or bad JSON.
    """
    url = f"{base_url.rstrip('/')}/api/projects/{int(project)}/export?exportType=JSON"
    if all_tasks:
        url += "&download_all_tasks=true"
    request = urllib.request.Request(url, headers={"User-Agent": "fcnseg"})
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        hint = " (check FCN_LABEL_STUDIO_TOKEN)" if exc.code in (401, 403) else ""
        raise LabelStudioUnreachable(f"{url} answered HTTP {exc.code}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LabelStudioUnreachable(f"cannot reach Label Studio at {url}: {reason}") from None
    try:
        export = json.loads(body)
    except ValueError:
        raise LabelStudioUnreachable(f"{url} did not answer JSON") from None
    if not isinstance(export, list):
        raise LabelStudioUnreachable(f"{url} answered {type(export).__name__}, not a task list")
    return export
