"""The web page's own files as the service serves them: the favicon and the page that links it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

import pytest
from fastapi.testclient import TestClient

from service.http.app import WEB_DIR, create_app
from service.http.settings import Settings

SVG = "{http://www.w3.org/2000/svg}svg"


@pytest.fixture(scope="module")
def client(conv_model):
    # the page shipped with the package (web_dir unset), as `fcn serve` serves it
    with TestClient(create_app(Settings(models=[str(conv_model)]))) as client:
        yield client


def icon_links(html: str) -> list[str]:
    return [
        tag
        for tag in re.findall(r"<link\b[^>]*>", html)
        if re.search(r'\brel="(?:shortcut )?icon"', tag)
    ]


def test_the_page_links_one_svg_favicon(client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    (link,) = icon_links(page.text)
    assert 'type="image/svg+xml"' in link
    href = re.search(r'href="([^"]+)"', link).group(1)
    assert href == "favicon.svg"  # relative: the page also works under a path prefix


def test_the_favicon_is_served_as_svg(client) -> None:
    answer = client.get("/favicon.svg")
    assert answer.status_code == 200
    assert answer.headers["content-type"].split(";")[0] == "image/svg+xml"
    assert answer.content == (WEB_DIR / "favicon.svg").read_bytes()
    root = ElementTree.fromstring(answer.content)
    assert root.tag == SVG and root.get("viewBox") == "0 0 32 32"
    assert b"http://" not in answer.content.replace(b"http://www.w3.org/2000/svg", b"")


def test_the_palette_option_is_on_the_page(client) -> None:
    html = client.get("/").text
    checkbox = re.search(r'<input id="clear-colours"[^>]*>', html)
    assert checkbox and 'type="checkbox"' in checkbox.group(0)
    assert 'id="palette-note"' in html
