"""A run killed half way resumes from its last finished tile row and writes the same bytes."""

from __future__ import annotations

import json

import pytest
import rasterio

from service.geo.run import GeoOptions, segment_raster


class Killed(Exception):
    """Stands for the process dying after a strip was written."""


def mask_bytes(path) -> bytes:
    with rasterio.open(path) as dataset:
        return dataset.read().tobytes()


@pytest.mark.parametrize(
    ("probabilities", "panel_width", "kill_after"),
    # one panel; 3 panels of 4 strips (killed in the first, and at the end of it)
    [(False, 4096, 2), (True, 4096, 2), (True, 400, 2), (False, 400, 4), (False, 400, 6)],
)
def test_interrupted_run_resumes_to_identical_output(
    make_raster, engine_for, tmp_path, probabilities, panel_width, kill_after
) -> None:
    engine = engine_for(tile_size=256, tile_overlap=64)
    source = make_raster("resume", 1000, 700)
    options = GeoOptions(probabilities=probabilities, panel_width=panel_width)
    whole = segment_raster(engine, source, tmp_path / "whole" / "r", options)

    seen = []

    def die_half_way(strip) -> None:
        seen.append(strip.index)
        if len(seen) == kill_after:
            raise Killed

    stem = tmp_path / "killed" / "r"
    with pytest.raises(Killed):
        segment_raster(engine, source, stem, options, after_strip=die_half_way)
    state = json.loads(stem.with_name("r.resume.json").read_text())
    assert state["strips_done"] == kill_after
    assert not stem.with_name("r_mask.tif").exists()

    resumed = segment_raster(engine, source, stem, options)
    assert resumed.strips_resumed == kill_after
    assert 0 < resumed.tiles_run < whole.tiles_run  # finished windows were not run again
    for done, again in zip(whole.outputs, resumed.outputs, strict=True):
        assert mask_bytes(done) == mask_bytes(again)
    assert not stem.with_name("r.resume.json").exists()


def _killed_after_one_strip(make_raster, engine_for, tmp_path):
    """A run of the 1000x700 raster killed after its first strip: ``(engine, source, stem)``."""
    engine = engine_for(tile_size=256, tile_overlap=64)
    source = make_raster("resume", 1000, 700)

    def die(strip) -> None:
        raise Killed

    stem = tmp_path / "r"
    with pytest.raises(Killed):
        segment_raster(engine, source, stem, GeoOptions(), after_strip=die)
    return engine, source, stem


def test_resume_false_starts_over(make_raster, engine_for, tmp_path) -> None:
    engine, source, stem = _killed_after_one_strip(make_raster, engine_for, tmp_path)
    again = segment_raster(engine, source, stem, GeoOptions(resume=False))
    assert again.strips_resumed == 0 and again.tiles_run == again.tiles


def test_changed_settings_do_not_resume(make_raster, engine_for, tmp_path) -> None:
    engine, source, stem = _killed_after_one_strip(make_raster, engine_for, tmp_path)
    other = segment_raster(engine, source, stem, GeoOptions(rescale=(0, 255)))
    assert other.strips_resumed == 0
