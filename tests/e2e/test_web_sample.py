"""The web page's "Try a sample" button and outline view, in headless Chromium against a real
`fcn serve` on the bundled models (no model named: `default`, the aerial one, and `demo`)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.formats.raster import borders
from service.http.launcher import fcn_serve, http, multipart
from tests.e2e.browser import find_browser, start_chromium

find_browser()  # skip the module, with the reason, when the browser is missing
pytest.importorskip("selenium", reason="selenium (the dev extra) drives the browser")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "service" / "http" / "web" / "samples"
SAMPLE_IMAGE = SAMPLE / "dubai-aerial.jpg"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with fcn_serve([], tmp_path_factory.mktemp("web_sample") / "serve.log") as s:
        yield s


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def _canvas_rgba(driver, canvas_id: str) -> np.ndarray:
    """The canvas's pixels as an (H, W, 4) array (read through a data URL: one round trip)."""
    import base64

    url = driver.execute_script(
        "return document.getElementById(arguments[0]).toDataURL('image/png');", canvas_id
    )
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_try_a_sample_segments_the_shipped_aerial_photo_and_draws_its_outline(driver, server):
    models = server.get_json("/v1/models")["models"]
    default = next(m for m in models if m["default"])
    assert default["name"] == "default"
    # what the API answers for the same file: the page must show exactly this mask
    body, headers = multipart(SAMPLE_IMAGE.read_bytes(), SAMPLE_IMAGE.name, "image/jpeg")
    status, _, answer = http("POST", server.url + "/v1/segment?model=default", body, headers)
    assert status == 200
    expected = np.asarray(Image.open(io.BytesIO(answer)))
    assert expected.shape == (512, 512)

    driver.get(server.url + "/")
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: d.find_element(By.ID, "model").get_attribute("value"))
    # a newcomer may have picked another model first: the sample goes to the default one
    driver.execute_script(
        "const s = document.getElementById('model'); s.value = 'demo';"
        "s.dispatchEvent(new Event('change'));"
    )
    driver.find_element(By.ID, "sample").click()
    result = driver.find_element(By.ID, "result")
    wait.until(lambda d: result.get_attribute("data-state") in ("ready", "error"))
    assert result.get_attribute("data-state") == "ready", driver.find_element(By.ID, "error").text
    assert driver.find_element(By.ID, "model").get_attribute("value") == "default"
    assert "dubai-aerial.jpg segmented with default (512×512)" in (
        driver.find_element(By.ID, "status").text
    )

    palette = np.array(default["palette"], np.uint8)
    shown = _canvas_rgba(driver, "mask")
    np.testing.assert_array_equal(shown[..., :3], palette[expected])
    rows = driver.find_elements(By.CSS_SELECTOR, "#legend tbody tr")
    assert [r.find_element(By.CLASS_NAME, "class-name").text for r in rows] == default["classes"]
    shares = np.bincount(expected.ravel(), minlength=len(rows)) / expected.size
    for row, share in zip(rows, shares, strict=True):
        assert float(row.get_attribute("data-fraction")) == pytest.approx(share, abs=1e-12)

    # outline view: the borders alone, in the class colours, laid over the image
    driver.find_element(By.CSS_SELECTOR, 'input[name="view"][value="outline"]').click()
    assert "outline" in driver.find_element(By.ID, "view").get_attribute("class").split()
    assert driver.find_element(By.ID, "outline").is_displayed()
    assert not driver.find_element(By.ID, "mask").is_displayed()
    image_box = driver.find_element(By.ID, "image").rect
    outline_box = driver.find_element(By.ID, "outline").rect
    assert (image_box["x"], image_box["y"]) == (outline_box["x"], outline_box["y"])
    assert image_box["width"] == outline_box["width"] > 0
    drawn = _canvas_rgba(driver, "outline")
    edge = borders(expected)
    assert 0 < edge.mean() < 0.5
    np.testing.assert_array_equal(drawn[..., 3] == 255, edge)
    assert (drawn[..., 3][~edge] == 0).all()
    np.testing.assert_array_equal(drawn[..., :3][edge], palette[expected][edge])

    # the Dubai palette paints water orange; "Clearer colours" paints it blue, the mask too
    water = default["classes"].index("water")
    assert (expected == water).any()
    r, g, b = palette[water]
    assert r > b, "the dataset's water is no longer orange-ish: revisit the palette note"
    driver.find_element(By.ID, "clear-colours").click()
    assert driver.find_element(By.ID, "result").get_attribute("data-palette") == "clear"
    repainted = _canvas_rgba(driver, "mask")[..., :3]
    r, g, b = (int(v) for v in repainted[expected == water][0])
    assert b > r and b > g, (r, g, b)
    assert len(np.unique(repainted[expected == water], axis=0)) == 1


def test_the_outline_format_matches_the_pages_borders(server):
    body, headers = multipart(SAMPLE_IMAGE.read_bytes(), SAMPLE_IMAGE.name, "image/jpeg")
    status, _, answer = http("POST", server.url + "/v1/segment?model=default", body, headers)
    mask = np.asarray(Image.open(io.BytesIO(answer)))
    status, headers_out, png = http(
        "POST", server.url + "/v1/segment?model=default&format=outline", body, headers
    )
    assert status == 200 and headers_out["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(png)))
    photo = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))
    models = json.loads(http("GET", server.url + "/v1/models")[2])["models"]
    palette = np.array(next(m for m in models if m["name"] == "default")["palette"], np.uint8)
    edge = borders(mask)
    np.testing.assert_array_equal(drawn[edge], palette[mask][edge])
    # elsewhere the photo itself (decoded by the service: same JPEG decoder as Pillow here)
    np.testing.assert_array_equal(drawn[~edge], photo[~edge])
