"""The vector and confidence formats, checked by third-party readers on real masks.

COCO RLE is decoded by pycocotools; polygons and GeoJSON are rasterised back with shapely
(pixel centres inside the polygons) and with Pillow's polygon fill; map coordinates come from a
GeoTIFF written by tifffile. Real masks: the Dubai aerial labels and the bundled model's masks
on the Dubai photographs (``../shared/data``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service import pipeline
from service.engine import Engine
from service.formats.coco_rle import class_counts, counts_to_string, label_runs, string_to_counts
from service.formats.polygons import polygons, trace
from service.formats.registry import ENCODERS
from service.formats.shapes import DEFAULT_TOLERANCE, class_polygons, coco_rle, geojson
from service.georef import GeoReference, read_georeference
from tests.requirements import shared_data

mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools (the dev extra)")
shapely = pytest.importorskip("shapely", reason="shapely (the dev extra)")
from shapely.geometry import LinearRing, MultiPolygon, Polygon, shape  # noqa: E402

ASSET = Path(__file__).resolve().parents[3] / "service" / "assets" / "default.onnx"
# three tiles of different sizes and content (all six Dubai classes appear among them)
TILES = ("tile1_008", "tile2_004", "tile3_008")
MIN_IOU = 0.98


def _dubai(kind: str, tile: str) -> Path:
    return shared_data("dubai_aerial", "val", kind, f"{tile}.{'png' if kind == 'masks' else 'jpg'}")


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(ASSET)


@pytest.fixture(scope="module", params=TILES)
def label_mask(request) -> np.ndarray:
    """A real hand-labelled mask (255 = ignore, kept as a class of its own here)."""
    return np.asarray(Image.open(_dubai("masks", request.param)))


@pytest.fixture(scope="module")
def predicted_mask(engine) -> np.ndarray:
    """The bundled model's mask of a real photograph: many small, ragged regions."""
    return engine.predict(engine.decode(_dubai("images", "tile1_008")))


def rasterise(rings_of_polygons: list, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies inside the polygons (shapely)."""
    if not rings_of_polygons:
        return np.zeros((height, width), bool)
    geometry = MultiPolygon([Polygon(p[0], p[1:]) for p in rings_of_polygons])
    ys, xs = np.mgrid[0:height, 0:width]
    return shapely.contains_xy(geometry, xs + 0.5, ys + 0.5)


def pillow_fill(rings_of_polygons: list, height: int, width: int, scale: int = 7) -> np.ndarray:
    """The same with Pillow's polygon fill: outer rings filled, holes cleared, in order.

    Pillow's fill also paints every pixel an edge passes through, so it is drawn ``scale``
    (odd) times finer and read back at the sub-pixels holding the pixel centres. Pillow's
    integer coordinates are pixel centres, ours pixel corners: ``x -> scale * x - 0.5``.
    """
    image = Image.new("1", (width * scale, height * scale), 0)
    draw = ImageDraw.Draw(image)
    for polygon in rings_of_polygons:
        for i, ring in enumerate(polygon):
            points = [(scale * x - 0.5, scale * y - 0.5) for x, y in ring]
            draw.polygon(points, fill=int(i == 0))
    centre = scale // 2
    return np.asarray(image)[centre::scale, centre::scale]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# --- COCO RLE -----------------------------------------------------------------------------------


def check_coco(mask: np.ndarray) -> None:
    report = coco_rle(mask, [f"c{i}" for i in range(int(mask.max()) + 1)])
    present = np.unique(mask)
    assert [a["category_id"] for a in report["annotations"]] == present.tolist()
    for annotation in report["annotations"]:
        k = annotation["category_id"]
        rle = {
            "size": annotation["segmentation"]["size"],
            "counts": annotation["segmentation"]["counts"],
        }
        decoded = mask_api.decode({**rle, "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded, (mask == k).astype(np.uint8))
        reference = mask_api.encode(np.asfortranarray((mask == k).astype(np.uint8)))
        assert rle["counts"] == reference["counts"].decode()  # byte for byte
        assert annotation["area"] == int(mask_api.area(reference))
        assert annotation["bbox"] == mask_api.toBbox(reference).astype(int).tolist()


def test_coco_rle_decodes_to_each_real_labelled_class(label_mask) -> None:
    check_coco(label_mask)


def test_coco_rle_decodes_to_each_predicted_class(predicted_mask) -> None:
    check_coco(predicted_mask)


@pytest.mark.parametrize(
    "mask",
    [
        np.ones((1, 1), np.uint8),
        np.ones((3, 4), np.uint8),
        np.array([[0, 1, 1, 1, 0, 0, 2]], np.uint8).T,  # one column, ends on a set pixel
        np.arange(12, dtype=np.uint8).reshape(3, 4),  # every pixel its own class
        np.random.default_rng(3).integers(0, 3, (57, 41)).astype(np.uint16),
    ],
    ids=["1x1", "all-set", "column", "all-distinct", "noise-uint16"],
)
def test_coco_rle_edge_cases(mask) -> None:
    check_coco(mask)


def test_coco_strings_round_trip_long_runs() -> None:
    mask = np.zeros((3000, 2500), np.uint8)  # runs past 2**20: several 5-bit groups per count
    mask[100:2900, 7:2400] = 1
    starts, lengths, labels = label_runs(mask)
    counts = class_counts(starts, lengths, labels, 1, mask.size)
    text = counts_to_string(counts)
    np.testing.assert_array_equal(string_to_counts(text), counts)
    assert text == mask_api.encode(np.asfortranarray(mask))["counts"].decode()


# --- polygons -----------------------------------------------------------------------------------


def check_exact(mask: np.ndarray) -> None:
    for k in np.unique(mask):
        back = rasterise(trace(mask == k).polygons(), *mask.shape)
        np.testing.assert_array_equal(back, mask == k)


def test_exact_outlines_rasterise_back_to_every_labelled_class(label_mask) -> None:
    check_exact(label_mask)


def test_exact_outlines_rasterise_back_to_every_predicted_class(predicted_mask) -> None:
    check_exact(predicted_mask)


def test_simplified_polygons_keep_iou_per_class_on_real_labels(label_mask) -> None:
    """The acceptance bar: IoU >= 0.98 per class at the default tolerance (shapely, Pillow)."""
    report = class_polygons(label_mask, [f"c{i}" for i in range(256)])
    assert report["tolerance"] == DEFAULT_TOLERANCE
    for entry in report["classes"]:
        truth = label_mask == entry["index"]
        for fill in (rasterise, pillow_fill):
            score = iou(fill(entry["polygons"], *label_mask.shape), truth)
            assert score >= MIN_IOU, (entry["index"], fill.__name__, score)


def test_polygons_are_valid_and_oriented_on_real_masks(label_mask) -> None:
    for k in np.unique(label_mask):
        for tolerance in (0.0, DEFAULT_TOLERANCE):
            for polygon in polygons(label_mask == k, tolerance).polygons():
                assert LinearRing(polygon[0]).is_ccw  # y up: counter-clockwise outer rings
                assert not any(LinearRing(hole).is_ccw for hole in polygon[1:])
        exact = MultiPolygon([Polygon(p[0], p[1:]) for p in trace(label_mask == k).polygons()])
        assert exact.is_valid, shapely.is_valid_reason(exact)


@pytest.mark.parametrize(
    "rows",
    [
        ["10", "01"],  # diagonal neighbours: two polygons touching at a corner
        ["111", "101", "111"],  # a hole
        ["110", "101", "111"],  # a hole touching the outside at a corner
        ["11111", "10001", "10101", "10001", "11111"],  # an island in a hole
        ["1111", "1001", "1011", "1111"],  # ... touching the hole's edge at a corner? no: 4-joined
        ["0110", "1001", "1001", "0110"],  # a ring of diagonal steps around a hole
    ],
)
def test_exact_outlines_of_holes_and_touching_corners(rows) -> None:
    mask = np.array([[c == "1" for c in row] for row in rows])
    found = trace(mask).polygons()
    geometry = MultiPolygon([Polygon(p[0], p[1:]) for p in found])
    assert geometry.is_valid, shapely.is_valid_reason(geometry)
    np.testing.assert_array_equal(rasterise(found, *mask.shape), mask)
    assert geometry.area == pytest.approx(mask.sum(), abs=0.5 * mask.sum())


def test_random_masks_trace_exactly() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = rng.integers(1, 20, 2)
        mask = rng.random((height, width)) < rng.random()
        found = trace(mask).polygons()
        np.testing.assert_array_equal(rasterise(found, height, width), mask)
        if found:
            geometry = MultiPolygon([Polygon(p[0], p[1:]) for p in found])
            assert geometry.is_valid, shapely.is_valid_reason(geometry)


def test_tolerance_trades_points_for_accuracy(label_mask) -> None:
    roads = label_mask == 2
    exact, simple = polygons(roads, 0.0), polygons(roads, DEFAULT_TOLERANCE)
    coarse = polygons(roads, 3.0)
    assert len(coarse.points) < len(simple.points) < len(exact.points)
    assert iou(rasterise(coarse.polygons(), *roads.shape), roads) < 1.0


# --- GeoJSON ------------------------------------------------------------------------------------


def test_geojson_in_pixels_matches_the_polygons(predicted_mask) -> None:
    classes = [f"c{i}" for i in range(5)]
    collection = geojson(predicted_mask, classes)
    assert collection["type"] == "FeatureCollection" and collection["coordinates"] == "pixel"
    by_index = {c["index"]: c for c in class_polygons(predicted_mask, classes)["classes"]}
    assert [f["id"] for f in collection["features"]] == sorted(by_index)
    for feature in collection["features"]:
        assert feature["geometry"]["coordinates"] == by_index[feature["id"]]["polygons"]
        assert shape(feature["geometry"]).is_valid


def geotiff(pixels: np.ndarray, extratags: list) -> bytes:
    tifffile = pytest.importorskip("tifffile", reason="tifffile (the dev extra)")
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, photometric="rgb", extratags=extratags)
    return buffer.getvalue()


# EPSG:32640 is UTM zone 40N, Dubai's; 0.3 m pixels, tie point at the top-left corner
TIEPOINT = (0.0, 0.0, 0.0, 500_000.0, 2_800_000.0, 0.0)
SCALE = (0.3, 0.3, 0.0)
GEOKEYS = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32640)


def test_geotiff_tags_place_the_geojson_on_the_map(engine) -> None:
    photo = engine.decode(_dubai("images", "tile2_004"))
    data = geotiff(
        photo,
        [
            (33922, "d", 6, TIEPOINT, False),
            (33550, "d", 3, SCALE, False),
            (34735, "H", 16, GEOKEYS, False),
        ],
    )
    assert read_georeference(data) == GeoReference(
        (500_000.0, 0.3, 0.0, 2_800_000.0, 0.0, -0.3), "EPSG:32640"
    )
    segmentation = pipeline.segment(engine, data, ("geojson",))
    default = json.loads(pipeline.encode(engine, segmentation, "geojson"))
    assert "crs" not in default and default["coordinates"] == "lonlat"  # RFC 7946: WGS 84
    info = {"model": "default"}
    body = json.loads(pipeline.encode(engine, segmentation, "geojson", info=info, crs="native"))
    assert body["model"] == "default" and body["coordinates"] == "map"
    assert body["crs"] == {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32640"}}
    assert body["coordinates"] == "map" and body["source_crs"] == "EPSG:32640"
    in_pixels = geojson(segmentation.mask, engine.metadata.classes)
    height, width = segmentation.mask.shape
    for mapped, plain in zip(body["features"], in_pixels["features"], strict=True):
        geometry, pixel_geometry = shape(mapped["geometry"]), shape(plain["geometry"])
        assert geometry.is_valid
        assert geometry.area == pytest.approx(pixel_geometry.area * 0.09)
        x0, y0, x1, y1 = geometry.bounds
        assert 500_000 <= x0 < x1 <= 500_000 + 0.3 * width
        assert 2_800_000 - 0.3 * height <= y0 < y1 <= 2_800_000
        for polygon in mapped["geometry"]["coordinates"]:  # RFC 7946: outer rings CCW
            assert LinearRing(polygon[0]).is_ccw


def test_transformation_matrix_and_pixel_is_point() -> None:
    pixels = np.zeros((4, 6, 3), np.uint8)
    matrix = (2.0, 0.5, 0, 100.0, 0.25, -2.0, 0, 50.0, 0, 0, 0, 0, 0, 0, 0, 1)
    assert read_georeference(geotiff(pixels, [(34264, "d", 16, matrix, False)])).transform == (
        100.0,
        2.0,
        0.5,
        50.0,
        0.25,
        -2.0,
    )
    point_keys = (1, 1, 0, 1, 1025, 0, 1, 2)  # RasterPixelIsPoint: tie points at pixel centres
    georef = read_georeference(
        geotiff(
            pixels,
            [
                (33922, "d", 6, TIEPOINT, False),
                (33550, "d", 3, SCALE, False),
                (34735, "H", 8, point_keys, False),
            ],
        )
    )
    assert georef.transform == pytest.approx((499_999.85, 0.3, 0.0, 2_800_000.15, 0.0, -0.3))
    assert georef.crs is None


def test_files_without_geo_tags_stay_in_pixels(engine) -> None:
    pixels = np.zeros((4, 6, 3), np.uint8)
    assert read_georeference(geotiff(pixels, [])) is None
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    assert read_georeference(png.getvalue()) is None
    assert read_georeference(b"not an image") is None


# --- scores -------------------------------------------------------------------------------------


def test_scores_png_is_the_top_class_probability(engine) -> None:
    pixels = engine.decode(_dubai("images", "tile2_004"))
    segmentation = pipeline.segment(engine, _dubai("images", "tile2_004"), ("scores",))
    logits = engine.logits(pixels)
    probability = np.exp(logits - logits.max(axis=0))
    probability = probability.max(axis=0) / probability.sum(axis=0)
    np.testing.assert_array_equal(segmentation.mask, engine.predict(pixels))
    scores = np.asarray(Image.open(io.BytesIO(pipeline.encode(engine, segmentation, "scores"))))
    assert scores.dtype == np.uint8 and scores.shape == segmentation.mask.shape
    assert np.abs(scores.astype(int) - np.rint(probability * 255)).max() <= 1
    assert scores.min() >= np.floor(255 / engine.metadata.num_classes)


def test_the_mask_alone_skips_probabilities(engine) -> None:
    segmentation = pipeline.segment(engine, _dubai("images", "tile2_004"), ("index", "polygons"))
    assert segmentation.confidence is None and segmentation.georef is None
    with pytest.raises(ValueError, match="probabilities"):
        pipeline.encode(engine, segmentation, "scores")


def test_every_format_has_a_distinct_suffix_and_a_media_type() -> None:
    assert len({e.suffix for e in ENCODERS.values()}) == len(ENCODERS)
    assert ENCODERS["geojson"].media_type == "application/geo+json"
    assert {e.name for e in ENCODERS.values() if e.needs_confidence} == {"scores"}


@pytest.mark.parametrize("tolerance", [-1.0, float("nan"), 1e9])
def test_bad_tolerances_are_refused(tolerance) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        class_polygons(np.zeros((2, 2), np.uint8), ["a"], tolerance)
