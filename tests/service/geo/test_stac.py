"""``NAME.stac.json`` beside a raster's COGs: a STAC Item pystac reads, its footprint in WGS 84,
the classes of the mask and the MLM fields of the model that made it."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone

import pytest
import rasterio

from service.geo.run import GeoOptions, segment_raster
from service.geo.stac import lists_all, stac_path, write_stac_item

pystac = pytest.importorskip("pystac", reason="pystac is in the dev extra (pip install pystac)")


@pytest.fixture(scope="module")
def finished(make_raster, engine_for, tmp_path_factory):
    """``(source, result, engine, started, ended)`` of one raster run with probabilities."""
    source = make_raster("stac", 700, 500)
    engine = engine_for(tile_size=256, tile_overlap=64)
    started = datetime.now(timezone.utc).replace(microsecond=0)
    stem = tmp_path_factory.mktemp("stac") / "ortho"
    result = segment_raster(engine, source, stem, GeoOptions(probabilities=True, model="default"))
    return source, result, engine, started, datetime.now(timezone.utc)


def test_item_describes_the_cogs_as_pystac_reads_it(finished) -> None:
    _, result, engine, _, _ = finished
    meta = engine.metadata
    assert result.item == stac_path(result.outputs[0].with_name("ortho"))
    item = pystac.Item.from_file(str(result.item))
    assert item.id == "ortho" and json.loads(result.item.read_text())["stac_version"] == "1.1.0"
    mask, prob = item.assets["mask"], item.assets["probabilities"]
    assert mask.get_absolute_href() == str(result.outputs[0])
    assert prob.get_absolute_href() == str(result.outputs[1])
    assert mask.media_type == pystac.MediaType.COG and mask.roles == ["data"]
    classes = mask.extra_fields["classification:classes"]
    assert [c["title"] for c in classes[:-1]] == list(meta.classes)
    assert [c["color_hint"] for c in classes[:-1]] == [
        "{:02X}{:02X}{:02X}".format(*rgb) for rgb in meta.palette
    ]
    assert classes[-1] == {"value": 255, "name": "nodata", "title": "no data", "nodata": True}
    assert [b["name"] for b in prob.extra_fields["bands"]] == list(meta.classes)
    with rasterio.open(result.outputs[0]) as cog:
        assert item.properties["proj:code"] == f"EPSG:{cog.crs.to_epsg()}" == "EPSG:32640"
        assert item.properties["proj:shape"] == [cog.height, cog.width] == [500, 700]
        assert item.properties["proj:transform"] == list(cog.transform)[:6]
        assert item.properties["proj:bbox"] == list(cog.bounds)
    # pystac's own extension readers find the fields
    from pystac.extensions.classification import ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension

    projection = ProjectionExtension.ext(item)
    assert projection.code == "EPSG:32640" and projection.shape == [500, 700]
    named = [c.name for c in ClassificationExtension.ext(mask).classes]
    assert named == [*meta.classes, "nodata"]


def test_bbox_and_geometry_hold_the_rasters_corners_in_lon_lat(finished) -> None:
    import shapely
    from pyproj import Transformer

    _, result, _, _, _ = finished
    item = pystac.Item.from_file(str(result.item))
    with rasterio.open(result.outputs[0]) as cog:
        left, bottom, right, top = cog.bounds
        to_lonlat = Transformer.from_crs(cog.crs, "EPSG:4326", always_xy=True)
    corners = [to_lonlat.transform(x, y) for x in (left, right) for y in (bottom, top)]
    west, south, east, north = item.bbox
    polygon = shapely.geometry.shape(item.geometry)
    for lon, lat in corners:
        assert west <= lon <= east and south <= lat <= north, (lon, lat, item.bbox)
        assert polygon.buffer(1e-9).contains(shapely.Point(lon, lat))
    lons, lats = [c[0] for c in corners], [c[1] for c in corners]
    # tight: 700 x 500 pixels at 0.5 m are a few thousandths of a degree in Dubai
    assert east - west <= max(lons) - min(lons) + 1e-6
    assert north - south <= max(lats) - min(lats) + 1e-6
    assert 54 < west < east < 57 and 24 < south < north < 26  # UTM 40N, Dubai


def test_datetime_is_the_processing_time_without_a_tiff_date(finished) -> None:
    _, result, _, started, ended = finished
    item = pystac.Item.from_file(str(result.item))
    assert started <= item.datetime <= ended
    assert item.properties["created"] == item.properties["datetime"]


def test_datetime_is_the_inputs_tiff_date_when_it_has_one(finished, tmp_path) -> None:
    source, result, engine, _, _ = finished
    dated = tmp_path / "dated.tif"
    shutil.copy(source, dated)
    with rasterio.open(dated, "r+") as dataset:
        dataset.update_tags(TIFFTAG_DATETIME="2021:03:04 05:06:07")
    tags = {"MODEL": "default", "BANDS": "1,2,3", "RESCALE": "8-bit as is"}
    path = write_stac_item(tmp_path / "dated", dated, result.outputs, engine.metadata, tags)
    item = pystac.Item.from_file(str(path))
    assert item.datetime == datetime(2021, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    assert item.properties["datetime"] == "2021-03-04T05:06:07Z"


def test_mlm_fields_say_which_model_made_it(finished) -> None:
    _, result, engine, _, _ = finished
    meta = engine.metadata
    item = pystac.Item.from_file(str(result.item))
    props = item.properties
    from pystac.extensions.mlm import MLMExtension

    model = MLMExtension.ext(item)  # pystac's MLM reader, at the schema version we declare
    assert MLMExtension.get_schema_uri() in item.stac_extensions
    assert model.architecture == "unet (resnet18 encoder)" and model.framework == "ONNX"
    assert model.input[0].input.shape == [-1, 3, -1, -1]
    assert props["mlm:name"] == "default"
    assert props["mlm:architecture"] == "unet (resnet18 encoder)"
    assert props["mlm:tasks"] == ["semantic-segmentation"] and props["mlm:framework"] == "ONNX"
    (model_input,) = props["mlm:input"]
    assert model_input["input"]["shape"] == [-1, meta.in_channels, -1, -1]
    assert model_input["bands"] == ["band_1", "band_2", "band_3"]
    scaling = model_input["value_scaling"]
    assert [s["mean"] for s in scaling] == pytest.approx([m * 255 for m in meta.mean])
    (output,) = props["mlm:output"]
    assert output["result"]["shape"] == [-1, meta.num_classes, -1, -1]
    assert [c["title"] for c in output["classification:classes"]] == list(meta.classes)


def test_resume_check_wants_every_output_listed(finished, tmp_path) -> None:
    _, result, _, _, _ = finished
    stem = result.outputs[0].with_name("ortho")
    assert lists_all(stem, result.outputs)
    assert not lists_all(stem, [*result.outputs, stem.with_name("ortho_mask.gpkg")])
    assert not lists_all(tmp_path / "missing", result.outputs)
    assert json.loads(result.item.read_text())["type"] == "Feature"
