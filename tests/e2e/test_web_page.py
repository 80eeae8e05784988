"""The web page in a real browser (headless Chromium + Selenium) against a real `fcn serve`."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from service.http.launcher import fcn_serve, http, multipart
from tests.e2e.browser import find_browser, start_chromium
from tests.e2e.conftest import IDENTITY_CLASSES, IDENTITY_PALETTE

find_browser()  # skip the module, with the reason, when the browser is missing
pytest.importorskip("selenium", reason="selenium (the dev extra) drives the browser")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WIDTH, HEIGHT = 90, 60


def regions_image() -> tuple[np.ndarray, np.ndarray]:
    """An RGB image of three regions and the mask the identity model gives it.

    Left half red (class 0), top right green (class 1), bottom right blue (class 2).
    """
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[: HEIGHT // 3, WIDTH // 2 :] = 1
    mask[HEIGHT // 3 :, WIDTH // 2 :] = 2
    colours = np.array([[200, 40, 30], [20, 190, 60], [30, 50, 210]], np.uint8)
    return colours[mask], mask


@pytest.fixture(scope="module")
def server(rgb_identity_model, conv_4class_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("web") / "serve.log"
    with fcn_serve(
        ["--model", f"rgb={rgb_identity_model}", "--model", f"conv={conv_4class_model}"], log
    ) as s:
        yield s


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture
def page(driver, server):
    driver.get(server.url + "/")
    wait = WebDriverWait(driver, 30)
    # the model list has arrived when the selector offers the served models
    wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 2)
    return driver, wait


def _upload(driver, wait, path, model: str) -> None:
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    driver.find_element(By.ID, "file").send_keys(str(path))


def _pixels(driver, points: list[tuple[int, int]]) -> list[list[int]]:
    return driver.execute_script(
        """
        const ctx = document.getElementById('mask').getContext('2d');
        return arguments[0].map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data));
        """,
        points,
    )


def _download(driver, link_id: str) -> bytes:
    """The bytes behind a download link, fetched by the page itself."""
    encoded = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById(arguments[0]).href)
          .then((r) => r.arrayBuffer())
          .then((b) => {
            let s = '';
            new Uint8Array(b).forEach((c) => { s += String.fromCharCode(c); });
            done(btoa(s));
          });
        """,
        link_id,
    )
    return base64.b64decode(encoded)


def test_segments_an_image_with_legend_colours_and_downloads(page, server, tmp_path):
    driver, wait = page
    rgb, expected = regions_image()
    path = tmp_path / "regions.png"
    Image.fromarray(rgb).save(path)

    _upload(driver, wait, path, "rgb")
    result = driver.find_element(By.ID, "result")
    wait.until(lambda d: result.get_attribute("data-state") == "ready")

    # overlay view: both figures in one grid cell, the mask see-through by the slider's amount
    driver.find_element(By.CSS_SELECTOR, 'input[name="view"][value="overlay"]').click()
    view = driver.find_element(By.ID, "view")
    assert "overlay" in view.get_attribute("class").split()
    image_box = driver.find_element(By.ID, "image").rect
    mask_box = driver.find_element(By.ID, "mask").rect
    assert (image_box["x"], image_box["y"]) == (mask_box["x"], mask_box["y"])
    assert image_box["width"] == mask_box["width"] > 0
    slider = driver.find_element(By.ID, "opacity")
    slider.send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT)  # keyboard: 50% -> 40%
    assert driver.find_element(By.ID, "opacity-value").text == "40%"
    opacity = driver.execute_script(
        "return getComputedStyle(document.getElementById('mask')).opacity"
    )
    assert float(opacity) == pytest.approx(0.4)

    # the shown mask: the model's colour for each region's class
    canvas = driver.find_element(By.ID, "mask")
    assert (int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))) == (
        WIDTH,
        HEIGHT,
    )
    points = [(5, 5), (WIDTH // 4, HEIGHT - 3), (WIDTH - 4, 3), (WIDTH - 4, HEIGHT - 4)]
    points += [(WIDTH // 2, HEIGHT // 3), (WIDTH // 2 - 1, HEIGHT // 3 - 1)]  # region borders
    for (x, y), pixel in zip(points, _pixels(driver, points), strict=True):
        assert pixel == [*IDENTITY_PALETTE[expected[y, x]], 255], (x, y)

    # the legend: every class, its colour and its share of the image
    rows = driver.find_elements(By.CSS_SELECTOR, "#legend tbody tr")
    assert [r.find_element(By.CLASS_NAME, "class-name").text for r in rows] == IDENTITY_CLASSES
    counts = np.bincount(expected.ravel(), minlength=3) / expected.size
    for row, fraction, colour in zip(rows, counts, IDENTITY_PALETTE, strict=True):
        assert float(row.get_attribute("data-fraction")) == pytest.approx(fraction, abs=1e-12)
        assert row.find_element(By.CLASS_NAME, "share").text == f"{fraction * 100:.1f}%"
        swatch = row.find_element(By.CLASS_NAME, "swatch").value_of_css_property("background-color")
        assert swatch in (
            f"rgb({colour[0]}, {colour[1]}, {colour[2]})",
            "rgba({}, {}, {}, 1)".format(*colour),
        )

    # downloads: the index PNG is the API's lossless mask; the colour PNG paints it
    index = np.asarray(Image.open(io.BytesIO(_download(driver, "download-index"))))
    np.testing.assert_array_equal(index, expected)
    colour = np.asarray(Image.open(io.BytesIO(_download(driver, "download-color"))).convert("RGB"))
    np.testing.assert_array_equal(colour, np.array(IDENTITY_PALETTE, np.uint8)[expected])
    link = driver.find_element(By.ID, "download-index")
    assert link.get_attribute("download") == "regions_mask.png"
    status = driver.find_element(By.ID, "status")
    assert status.get_attribute("aria-live") == "polite" and "Done" in status.text


def _swatches(driver) -> list[list[int]]:
    """Each legend row's swatch colour, as [r, g, b]."""
    return driver.execute_script(
        """
        return Array.from(document.querySelectorAll('#legend tbody .swatch')).map((s) =>
          getComputedStyle(s).backgroundColor.match(/\\d+/g).slice(0, 3).map(Number));
        """
    )


def test_the_favicon_link_loads_an_svg(page):
    driver, _ = page
    answer = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const link = document.querySelector('link[rel="icon"]');
        fetch(link.href).then(async (r) => done(
          [link.getAttribute('href'), r.status, r.headers.get('content-type'), await r.text()]));
        """
    )
    href, status, media_type, body = answer
    assert href == "favicon.svg"
    assert status == 200 and media_type.split(";")[0] == "image/svg+xml"
    assert body.lstrip().startswith("<svg") and "</svg>" in body


def test_clearer_colours_repaint_the_view_but_not_the_indices_or_downloads(page, tmp_path):
    driver, wait = page
    rgb, expected = regions_image()
    path = tmp_path / "regions.png"
    Image.fromarray(rgb).save(path)
    _upload(driver, wait, path, "rgb")
    result = driver.find_element(By.ID, "result")
    wait.until(lambda d: result.get_attribute("data-state") == "ready")
    toggle = driver.find_element(By.ID, "clear-colours")
    note = driver.find_element(By.ID, "palette-note")
    assert not toggle.is_selected() and toggle.is_enabled()
    assert result.get_attribute("data-palette") == "model"
    assert "the model's own palette" in note.text and "Clearer colours" in note.text
    assert _swatches(driver) == IDENTITY_PALETTE
    index_before = _download(driver, "download-index")
    colour_before = _download(driver, "download-color")
    points = [(5, 5), (WIDTH - 4, 3), (WIDTH - 4, HEIGHT - 4)]  # one pixel of each class

    toggle.click()
    assert result.get_attribute("data-palette") == "clear"
    clear = _swatches(driver)
    assert len({tuple(c) for c in clear}) == 3, clear  # three distinct colours
    assert all(c != m for c, m in zip(clear, IDENTITY_PALETTE, strict=True))
    for (x, y), pixel in zip(points, _pixels(driver, points), strict=True):
        assert pixel == [*clear[expected[y, x]], 255], (x, y)  # the mask shows the legend's colours
    assert "clearer palette" in note.text and "keep the model's palette" in note.text
    # what the service answered is untouched: the same index PNG and colour PNG to download
    assert _download(driver, "download-index") == index_before
    assert _download(driver, "download-color") == colour_before
    index = np.asarray(Image.open(io.BytesIO(index_before)))
    np.testing.assert_array_equal(index, expected)

    toggle.click()
    assert result.get_attribute("data-palette") == "model"
    assert _swatches(driver) == IDENTITY_PALETTE
    for (x, y), pixel in zip(points, _pixels(driver, points), strict=True):
        assert pixel == [*IDENTITY_PALETTE[expected[y, x]], 255], (x, y)


def test_the_model_selector_lists_the_served_models(page, server):
    driver, _ = page
    served = server.get_json("/v1/models")["models"]
    options = Select(driver.find_element(By.ID, "model")).options
    assert sorted(o.get_attribute("value") for o in options) == sorted(m["name"] for m in served)


def test_a_non_image_shows_the_apis_message(page, server, tmp_path):
    driver, wait = page
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not an image\n")
    # what the API says to the same upload
    body, headers = multipart(path.read_bytes(), path.name, "text/plain")
    status, _, answer = http("POST", server.url + "/v1/segment?model=rgb", body, headers)
    assert status in (400, 415)
    message = json.loads(answer)["error"]["message"]
    assert message

    _upload(driver, wait, path, "rgb")
    error = driver.find_element(By.ID, "error")
    wait.until(lambda d: error.is_displayed())
    assert error.text == message
    assert error.get_attribute("role") == "alert"
    assert driver.find_element(By.ID, "result").get_attribute("data-state") == "error"


def test_every_control_has_a_label(page):
    driver, _ = page
    unlabelled = driver.execute_script(
        """
        return Array.from(document.querySelectorAll('input, select, button, canvas[role]'))
          .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
          .map((el) => el.outerHTML);
        """
    )
    assert unlabelled == []
    # the file picker is reachable with the keyboard
    driver.find_element(By.ID, "model").send_keys(Keys.TAB, Keys.TAB)
    focused = driver.switch_to.active_element
    assert focused.get_attribute("id") == "file"
    assert EC.visibility_of_element_located((By.ID, "file"))(driver)


@pytest.fixture(scope="module")
def many_classes_server(tmp_path_factory):
    """A 300-class model: its index PNG is 16-bit, which a canvas cannot read exactly."""
    from tests.service.conftest import make_onnx_model

    folder = tmp_path_factory.mktemp("many")
    path = make_onnx_model(folder / "many.onnx", kind="conv", num_classes=300)
    with fcn_serve(["--model", f"many={path}"], folder / "serve.log") as s:
        yield s


def test_more_than_256_classes_use_the_services_colours_and_counts(
    driver, many_classes_server, tmp_path
):
    server = many_classes_server
    pixels = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(pixels).save(path)
    body, headers = multipart(path.read_bytes(), path.name, "image/png")
    answers = {
        fmt: http("POST", f"{server.url}/v1/segment?format={fmt}", body, headers)
        for fmt in ("index", "color", "json")
    }
    assert {fmt: a[0] for fmt, a in answers.items()} == {"index": 200, "color": 200, "json": 200}
    mask = np.asarray(Image.open(io.BytesIO(answers["index"][2])))
    assert mask.dtype == np.uint16 and mask.max() > 255  # the case this path exists for
    colour = np.asarray(Image.open(io.BytesIO(answers["color"][2])).convert("RGB"))
    summary = json.loads(answers["json"][2])

    driver.get(server.url + "/")
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.find_element(By.ID, "model").get_attribute("value") == "many")
    driver.find_element(By.ID, "file").send_keys(str(path))
    result = driver.find_element(By.ID, "result")
    wait.until(lambda d: result.get_attribute("data-state") == "ready")

    points = [(x, y) for x in range(0, 50, 7) for y in range(0, 40, 7)]
    for (x, y), shown in zip(points, _pixels(driver, points), strict=True):
        assert shown == [*colour[y, x].tolist(), 255], (x, y)
    fractions = driver.execute_script(
        "return Array.from(document.querySelectorAll('#legend tbody tr'))"
        ".map((r) => Number(r.dataset.fraction))"
    )
    assert fractions == pytest.approx([c["fraction"] for c in summary["classes"]], abs=1e-12)
    index = np.asarray(Image.open(io.BytesIO(_download(driver, "download-index"))))
    np.testing.assert_array_equal(index, mask)


def test_an_api_key_typed_into_the_page_unlocks_the_service(driver, rgb_identity_model, tmp_path):
    key = "e2e-secret-key"
    rgb, expected = regions_image()
    path = tmp_path / "regions.png"
    Image.fromarray(rgb).save(path)
    args = ["--model", f"rgb={rgb_identity_model}"]
    with fcn_serve(args, tmp_path / "serve.log", env={"FCN_API_KEY": key}) as server:
        status, _, answer = http("GET", server.url + "/v1/models")
        assert status == 401
        message = json.loads(answer)["error"]["message"]

        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 30)
        error = driver.find_element(By.ID, "error")
        wait.until(lambda d: error.is_displayed())
        assert error.text.startswith(message)

        field = driver.find_element(By.ID, "api-key")
        assert field.get_attribute("type") == "password"
        field.send_keys(key, Keys.TAB)  # `change` reloads the model list with the key
        wait.until(
            lambda d: (
                Select(d.find_element(By.ID, "model")).first_selected_option.get_attribute("value")
                == "rgb"
            )
        )
        assert not error.is_displayed()
        driver.find_element(By.ID, "file").send_keys(str(path))
        result = driver.find_element(By.ID, "result")
        wait.until(lambda d: result.get_attribute("data-state") == "ready")
        index = np.asarray(Image.open(io.BytesIO(_download(driver, "download-index"))))
        np.testing.assert_array_equal(index, expected)


def test_every_listed_format_downloads_from_the_page(page, server, tmp_path):
    mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools (the dev extra)")
    driver, wait = page
    rgb, expected = regions_image()
    path = tmp_path / "regions.png"
    Image.fromarray(rgb).save(path)
    _upload(driver, wait, path, "rgb")
    result = driver.find_element(By.ID, "result")
    wait.until(lambda d: result.get_attribute("data-state") == "ready")

    listed = server.get_json("/v1/models/rgb")["formats"]
    selector = Select(driver.find_element(By.ID, "export-format"))
    offered = [o.get_attribute("value") for o in selector.options if o.get_attribute("value")]
    assert offered == [f["name"] for f in listed]
    link = driver.find_element(By.ID, "export-link")

    def export(name: str) -> bytes:
        selector.select_by_value(name)
        wait.until(
            lambda d: (
                link.get_attribute("data-state") == "ready"
                and link.get_attribute("data-format") == name
            )
        )
        return _download(driver, "export-link")

    suffixes = {f["name"]: f["suffix"] for f in listed}
    coco = json.loads(export("coco-rle"))
    assert link.get_attribute("download") == "regions" + suffixes["coco-rle"]
    assert coco["model"] == "rgb"
    for annotation in coco["annotations"]:
        rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(mask_api.decode(rle), expected == annotation["category_id"])
    geojson = json.loads(export("geojson"))
    assert link.get_attribute("download") == "regions" + suffixes["geojson"]
    assert [f["properties"]["name"] for f in geojson["features"]] == IDENTITY_CLASSES
    scores = np.asarray(Image.open(io.BytesIO(export("scores"))))
    assert scores.shape == expected.shape and scores.dtype == np.uint8


def test_a_geotiff_upload_is_previewed_under_the_overlay(page, tmp_path):
    """Browsers cannot show a TIFF: the page asks the service for a PNG of it (/v1/preview)
    and shows that under the mask, pixel for pixel."""
    rasterio = pytest.importorskip("rasterio", reason="rasterio (the geo extra)")
    from affine import Affine

    driver, wait = page
    rgb, expected = regions_image()
    path = tmp_path / "regions.tif"
    wide = rgb.astype(np.uint16) * 257  # 16-bit, photometric=minisblack: no browser shows it
    # A black and a white patch (12% of the rows of a quarter of the width each, away from the
    # points checked) put every band's 2nd and 98th percentiles at 0 and 65535, so the
    # bit-depth rule maps the file back to the 8-bit colours exactly.
    rows, cols = int(0.12 * HEIGHT) + 1, slice(WIDTH // 8, WIDTH // 8 + WIDTH // 4)
    wide[HEIGHT // 4 : HEIGHT // 4 + rows, cols] = 0
    wide[HEIGHT // 2 : HEIGHT // 2 + rows, cols] = 65535
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=WIDTH,
        height=HEIGHT,
        count=3,
        dtype="uint16",
        crs="EPSG:32640",
        transform=Affine(0.5, 0, 300_000, 0, -0.5, 2_790_000),
        photometric="MINISBLACK",
    ) as out:
        out.write(wide.transpose(2, 0, 1))

    _upload(driver, wait, path, "rgb")
    result = driver.find_element(By.ID, "result")
    wait.until(lambda d: result.get_attribute("data-state") == "ready")
    image = driver.find_element(By.ID, "image")
    wait.until(lambda d: image.get_attribute("data-preview") == "server")
    wait.until(
        lambda d: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image
        )
    )
    assert driver.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image
    ) == [WIDTH, HEIGHT]
    shown = driver.execute_script(
        """
        const img = arguments[0];
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const ctx = canvas.getContext('2d');
        ctx.drawImage(img, 0, 0);
        return arguments[1].map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data));
        """,
        image,
        [(5, 5), (WIDTH - 4, 3), (WIDTH - 4, HEIGHT - 4)],
    )
    for pixel, (x, y) in zip(shown, [(5, 5), (WIDTH - 4, 3), (WIDTH - 4, HEIGHT - 4)], strict=True):
        assert pixel == [*rgb[y, x].tolist(), 255], (x, y)

    # under the overlay: the preview and the mask share one box, the mask painted by class
    driver.find_element(By.CSS_SELECTOR, 'input[name="view"][value="overlay"]').click()
    image_box, mask_box = image.rect, driver.find_element(By.ID, "mask").rect
    assert (image_box["x"], image_box["y"]) == (mask_box["x"], mask_box["y"])
    assert image_box["width"] == mask_box["width"] > 0 and image.is_displayed()
    points = [(5, 5), (WIDTH - 4, 3), (WIDTH - 4, HEIGHT - 4)]
    for (x, y), pixel in zip(points, _pixels(driver, points), strict=True):
        assert pixel == [*IDENTITY_PALETTE[expected[y, x]], 255], (x, y)
