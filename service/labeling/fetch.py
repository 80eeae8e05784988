"""Fetch the image a Label Studio task points at, within the service's limits.

A task holds a URL, not the image: ``/data/upload/3/ab12-photo.jpg`` or
``/data/local-files/?d=...`` (files Label Studio serves itself, relative to its own address),
or an absolute ``http(s)://`` URL. Fetching whatever URL a request names would let anyone who
can reach the service make it read internal addresses (server-side request forgery), so:

* relative URLs are resolved against the configured Label Studio address only
  (``FCN_LABEL_STUDIO_URL``), never against an address a request supplies;
* absolute URLs are fetched only from that address's host or a host on the allow-list
  (``FCN_LABEL_STUDIO_ALLOWED_HOSTS``); other schemes (``s3://``, ``file:``, ``data:``) are
  refused;
* the Label Studio API token goes to the Label Studio address only;
* redirects are not followed (a redirect could leave the allow-list), the body is capped at the
  service's request-body limit and the whole fetch has a timeout.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass


class FetchError(ValueError):
    """The image URL is refused or could not be read; ``code`` says which (see ``CODES``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# code -> HTTP status the service answers with.
CODES = {
    "image_url_refused": 422,  # scheme, host not allowed, relative without a base
    "image_fetch_failed": 422,  # connection error, timeout, remote error status, redirect
    "image_too_large": 413,
}


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError:
        port = -1
    return parts.scheme, (parts.hostname or "").lower(), port


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        raise FetchError(
            "image_fetch_failed",
            f"{req.full_url} redirects to {newurl}; redirects are not followed",
        )


@dataclass(frozen=True)
class ImageFetcher:
    """Reads task image URLs; see the module docstring for the rules.

    Attributes:
        base_url: Label Studio's address as this service reaches it (``http://host:8080``),
            or None: then only absolute URLs on ``allowed_hosts`` can be read.
        token: Label Studio API token, sent as ``Authorization: Token ...`` to ``base_url``.
        allowed_hosts: more hosts (``name`` or ``name:port``) images may come from.
        max_bytes: the largest image read.
        timeout_s: connect + read timeout.
    """

    base_url: str | None
    token: str | None
    allowed_hosts: Sequence[str]
    max_bytes: int
    timeout_s: float

    def resolve(self, url: str) -> str:
        """The absolute URL to read, or :class:`FetchError` when it is not allowed."""
        if not isinstance(url, str) or not url.strip():
            raise FetchError("image_url_refused", "the task's image field is not a URL")
        url = url.strip()
        if url.startswith("/") and not url.startswith("//"):
            if not self.base_url:
                raise FetchError(
                    "image_url_refused",
                    f"{url!r} is relative to Label Studio's address; set FCN_LABEL_STUDIO_URL "
                    "to it (e.g. http://label-studio:8080)",
                )
            return self.base_url.rstrip("/") + url
        scheme, host, port = _origin(url)
        if scheme not in ("http", "https"):
            raise FetchError(
                "image_url_refused",
                f"{url[:80]!r}: only http(s) URLs and Label Studio's own /data/ paths are read "
                "(use Label Studio's local files or uploads for other storage)",
            )
        if not self._allowed(host, port):
            raise FetchError(
                "image_url_refused",
                f"host {host!r} is not Label Studio's (FCN_LABEL_STUDIO_URL) or on "
                "FCN_LABEL_STUDIO_ALLOWED_HOSTS; add it there to let the service read images "
                "from it",
            )
        return url

    def _allowed(self, host: str, port: int) -> bool:
        if self.base_url and _origin(self.base_url)[1:] == (host, port):
            return True
        for entry in self.allowed_hosts:
            entry = entry.strip().lower()
            if entry == "*" or entry == host or entry == f"{host}:{port}":
                return True
        return False

    def fetch(self, url: str) -> bytes:
        """The bytes at ``url`` (resolved and checked first).

        Raises:
            FetchError: refused, unreadable, or larger than ``max_bytes``.
        """
        absolute = self.resolve(url)
        request = urllib.request.Request(absolute, headers={"User-Agent": "fcnseg"})
        if self.token and self.base_url and _origin(absolute) == _origin(self.base_url):
            request.add_header("Authorization", f"Token {self.token}")
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=self.timeout_s) as response:
                data = response.read(self.max_bytes + 1)
        except FetchError:
            raise
        except urllib.error.HTTPError as exc:
            hint = " (check FCN_LABEL_STUDIO_TOKEN)" if exc.code in (401, 403) else ""
            raise FetchError(
                "image_fetch_failed", f"reading {absolute} answered HTTP {exc.code}{hint}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError("image_fetch_failed", f"reading {absolute} failed: {reason}") from None
        if len(data) > self.max_bytes:
            raise FetchError("image_too_large", f"{absolute} is larger than {self.max_bytes} bytes")
        return data
