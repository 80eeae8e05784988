"""The job API over a real ``fcn serve`` (uvicorn on 127.0.0.1): submit, poll, fetch, cancel,
and a server killed mid-job that resumes it on restart. Outputs are checked against
``fcn predict`` on the same raster, with rasterio, gdalinfo and ogrinfo."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
from PIL import Image

from tests.requirements import require_or_skip
from tests.service.http.conftest import image_bytes, start_server

REPO = Path(__file__).resolve().parents[3]
# The same engine settings for the server and `fcn predict`: outputs must be identical.
ENGINE = ["--tile-size", "256", "--tile-overlap", "64", "--concurrency", "2"]
ENGINE += ["--backend", "ort", "--precision", "fp32", "--intra-op-threads", "1"]


def serve(model: Path, jobs_dir: Path | None, tmp_path: Path):
    env = {"FCN_JOBS_DIR": str(jobs_dir)} if jobs_dir is not None else {}
    return start_server(["--model", f"conv={model}", "--no-access-log", *ENGINE], tmp_path, env)


@pytest.fixture(scope="module")
def jobs_dir(make_raster, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("jobs")
    shutil.copy(make_raster("jobs", 1024, 1536), folder / "ortho.tif")
    return folder


@pytest.fixture(scope="module")
def server(conv_model, jobs_dir, tmp_path_factory):
    server = serve(conv_model, jobs_dir, tmp_path_factory.mktemp("serve"))
    yield server
    assert server.stop() == 0, server.output()
    assert "Traceback" not in server.output()


@pytest.fixture(scope="module")
def reference(conv_model, jobs_dir, tmp_path_factory) -> Path:
    """``fcn predict`` on the same raster: ``out/ortho_mask.tif``, ``_prob.tif``, ``.gpkg``."""
    out = tmp_path_factory.mktemp("predict")
    command = [sys.executable, "-m", "fcn", "predict", f"conv={conv_model}"]
    command += [str(jobs_dir / "ortho.tif"), "--out", str(out), "--probabilities", *ENGINE]
    command += ["--vectors", "gpkg"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def submit(server, **spec) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/jobs", json=spec, timeout=30)


def wait(server, job_id: str, until=("done", "failed", "lost", "cancelled"), timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in until:
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")


def fetch(server, job: dict, suffix: str, folder: Path) -> Path:
    output = next(o for o in job["outputs"] if o["name"].endswith(suffix))
    answer = httpx.get(server.url + output["href"], timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == output["media_type"]
    path = folder / output["name"]
    path.write_bytes(answer.content)
    return path


def pixels(path: Path) -> tuple[np.ndarray, object, object]:
    with rasterio.open(path) as dataset:
        return dataset.read(), dataset.crs, dataset.transform


def test_a_job_by_path_writes_what_fcn_predict_writes(server, reference, tmp_path) -> None:
    answer = submit(server, path="ortho.tif", probabilities=True, vectors={"driver": "GPKG"})
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["status"] == "queued" and answer.headers["location"] == f"/v1/jobs/{job['id']}"
    job = wait(server, job["id"])
    assert job["status"] == "done", job
    progress = job["progress"]
    assert progress["tiles_done"] == progress["tiles"] > 1
    assert progress["km2_done"] == pytest.approx(1024 * 1536 * 0.25 / 1e6)
    names = sorted(o["name"] for o in job["outputs"])
    assert names == ["ortho_mask.gpkg", "ortho_mask.tif", "ortho_prob.tif"]
    for suffix in ("_mask.tif", "_prob.tif"):
        got = fetch(server, job, suffix, tmp_path)
        mask, crs, transform = pixels(got)
        want, want_crs, want_transform = pixels(reference / f"ortho{suffix}")
        assert np.array_equal(mask, want) and crs == want_crs and transform == want_transform
    info = subprocess.run(
        ["gdalinfo", str(tmp_path / "ortho_mask.tif")], capture_output=True, text=True, check=True
    ).stdout
    assert (
        'ID["EPSG",32640]' in info and "Pixel Size = (0.500000000000000,-0.500000000000000)" in info
    )
    gpkg = fetch(server, job, ".gpkg", tmp_path)
    ogr = subprocess.run(["ogrinfo", "-so", "-al", str(gpkg)], capture_output=True, text=True)
    assert ogr.returncode == 0 and 'ID["EPSG",32640]' in ogr.stdout, ogr.stdout
    import pyogrio

    got, want = pyogrio.read_info(gpkg), pyogrio.read_info(reference / "ortho_mask.gpkg")
    assert got["crs"] == want["crs"] == "EPSG:32640" and got["features"] == want["features"] > 0


def test_outputs_answer_range_requests(server, tmp_path) -> None:
    job = wait(server, submit(server, path="ortho.tif").json()["id"])
    href = server.url + job["outputs"][0]["href"]
    whole = httpx.get(href, timeout=30).content
    part = httpx.get(href, headers={"Range": "bytes=100-1123"}, timeout=30)
    assert (
        part.status_code == 206 and part.headers["content-range"] == f"bytes 100-1123/{len(whole)}"
    )
    assert part.content == whole[100:1124]
    # QGIS/GDAL read a COG over HTTP with range requests: gdalinfo on the URL.
    if shutil.which("gdalinfo") is None:
        require_or_skip("gdalinfo (Debian's gdal-bin) is not installed")
    info = subprocess.run(["gdalinfo", f"/vsicurl/{href}"], capture_output=True, text=True)
    assert info.returncode == 0 and "EPSG" in info.stdout, info.stderr


def test_an_uploaded_raster_gives_the_same_mask(server, jobs_dir, reference, tmp_path) -> None:
    body = (jobs_dir / "ortho.tif").read_bytes()
    answer = httpx.post(
        f"{server.url}/v1/jobs",
        content=body,
        params={"vectors": "GeoJSON"},
        headers={"Content-Type": "image/tiff"},
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    job = wait(server, answer.json()["id"])
    assert job["status"] == "done" and job["source"] == "upload", job
    mask, crs, _ = pixels(fetch(server, job, "_mask.tif", tmp_path))
    assert np.array_equal(mask, pixels(reference / "ortho_mask.tif")[0])
    geojson = json.loads(fetch(server, job, ".geojson", tmp_path).read_text())
    lon, lat = geojson["features"][0]["geometry"]["coordinates"][0][0]
    assert 54.0 < lon < 56.0 and 25.0 < lat < 25.5  # RFC 7946: WGS 84 by default


def test_bad_requests_are_4xx_naming_the_problem(server, jobs_dir, tmp_path) -> None:
    (jobs_dir / "notes.tif").write_text("not a raster")
    Image.new("RGB", (64, 64)).save(jobs_dir / "plain.tif")  # no CRS, no transform
    outside = tmp_path / "outside.tif"
    shutil.copy(jobs_dir / "ortho.tif", outside)
    (jobs_dir / "link.tif").symlink_to(outside)
    cases = [
        ({"path": "../outside.tif"}, 403, "path_not_allowed", "outside"),
        ({"path": "/etc/passwd"}, 403, "path_not_allowed", "relative"),
        ({"path": "link.tif"}, 403, "path_not_allowed", "outside"),
        ({"path": ".jobs"}, 403, "path_not_allowed", "outside"),
        ({"path": "missing.tif"}, 422, "georeference", "no file"),
        ({"path": "notes.tif"}, 415, "unsupported_image", "not a raster"),
        ({"path": "plain.tif"}, 422, "georeference", "not georeferenced"),
        ({"path": "ortho.tif", "bands": [1, 2, 3, 4]}, 422, "georeference", "--bands"),
        ({"path": "ortho.tif", "bands": [1, 2]}, 422, "georeference", "--bands"),
        ({"path": "ortho.tif", "model": "nope"}, 404, "unknown_model", "conv"),
        ({"path": "ortho.tif", "vectors": {"driver": "KML"}}, 422, "validation_error", "driver"),
        ({"path": "ortho.tif", "colour": 1}, 422, "validation_error", "colour"),
    ]
    for spec, status, code, words in cases:
        answer = submit(server, **spec)
        assert answer.status_code == status, (spec, answer.text)
        error = answer.json()["error"]
        assert error["code"] == code and words in error["message"], (spec, error)
    for path in ("/v1/jobs/0123", "/v1/jobs/" + "a" * 32, "/v1/jobs/" + "a" * 32 + "/outputs/x"):
        answer = httpx.get(server.url + path, timeout=10)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_job"
    assert httpx.delete(f"{server.url}/v1/jobs/{'b' * 32}", timeout=10).status_code == 404
    wrong = httpx.post(
        f"{server.url}/v1/jobs", content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert wrong.status_code == 415
    # GET and POST are two routes on one path: a 405 names both (and the reload route only POST)
    assert httpx.request("PUT", f"{server.url}/v1/jobs").headers["allow"] == "GET, POST"
    assert httpx.request("PUT", f"{server.url}/v1/models/reload").headers["allow"] == "POST"
    listed = httpx.get(f"{server.url}/v1/jobs", timeout=10).json()["jobs"]
    assert all(job["source"] not in ("notes.tif", "plain.tif") for job in listed)


def test_an_output_of_an_unfinished_job_is_a_404_and_segment_keeps_working(server) -> None:
    job = submit(server, path="ortho.tif", probabilities=True).json()
    job = wait(server, job["id"], until=("running", "done"))
    assert job["status"] == "running", "the job finished before it could be observed running"
    missing = httpx.get(f"{server.url}/v1/jobs/{job['id']}/outputs/ortho_mask.tif", timeout=10)
    assert missing.status_code == 404
    answer = httpx.post(
        f"{server.url}/v1/segment",
        content=image_bytes(256, 256),
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    during = httpx.get(f"{server.url}/v1/jobs/{job['id']}", timeout=10).json()
    assert during["status"] == "running"  # the request was answered while the job ran
    assert wait(server, job["id"])["status"] == "done"


def test_cancel_stops_a_running_job_and_deletes_its_files(server, jobs_dir) -> None:
    job = submit(server, path="ortho.tif").json()
    wait(server, job["id"], until=("running", "done"))
    answer = httpx.delete(f"{server.url}/v1/jobs/{job['id']}", timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    folder = jobs_dir / ".jobs" / job["id"]
    deadline = time.monotonic() + 30
    while len(list(folder.iterdir())) > 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(p.name for p in folder.iterdir()) == ["request.json", "status.json"]
    assert wait(server, job["id"])["status"] == "cancelled"
    assert httpx.delete(f"{server.url}/v1/jobs/{job['id']}", timeout=10).status_code == 204
    assert httpx.get(f"{server.url}/v1/jobs/{job['id']}", timeout=10).status_code == 404
    assert not folder.exists()


def test_metrics_count_jobs_and_tiles(server) -> None:
    wait(server, submit(server, path="ortho.tif").json()["id"])
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    done = next(line for line in text.splitlines() if line.startswith('fcn_jobs{status="done"}'))
    assert float(done.split()[-1]) >= 1
    tiles = next(line for line in text.splitlines() if line.startswith("fcn_job_tiles_total"))
    assert float(tiles.split()[-1]) >= 40


def test_without_a_jobs_folder_the_api_says_how_to_enable_it(conv_model, tmp_path) -> None:
    server = serve(conv_model, None, tmp_path)
    try:
        answer = httpx.get(f"{server.url}/v1/jobs", timeout=10)
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert error["code"] == "jobs_disabled" and "FCN_JOBS_DIR" in error["message"]
    finally:
        assert server.stop() == 0


def test_an_upload_over_the_cap_is_a_413_and_leaves_nothing(conv_model, jobs_dir, tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    body = (jobs_dir / "ortho.tif").read_bytes()
    env = {"FCN_JOBS_DIR": str(folder), "FCN_JOBS_MAX_UPLOAD_BYTES": str(len(body) // 2)}
    server = start_server(
        ["--model", f"conv={conv_model}", "--no-access-log", *ENGINE], tmp_path, env
    )
    try:
        # with a Content-Length, and streamed in chunks without one
        for content in (body, iter([body[i : i + 65536] for i in range(0, len(body), 65536)])):
            answer = httpx.post(
                f"{server.url}/v1/jobs",
                content=content,
                headers={"Content-Type": "image/tiff"},
                timeout=60,
            )
            assert answer.status_code == 413, answer.text
            assert answer.json()["error"]["code"] == "body_too_large"
        assert httpx.get(f"{server.url}/v1/jobs", timeout=10).json()["jobs"] == []
        left = [p for p in folder.rglob("*") if p.is_file()]
        assert left == [], left  # no half-written upload, no job folder
    finally:
        assert server.stop() == 0, server.output()


def _kill_part_way(server, status_file: Path, timeout: float = 120) -> None:
    """SIGKILL the server once the job's status shows some, not all, of its tiles done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = json.loads(status_file.read_text())["progress"]
        if progress and 0 < progress["tiles_done"] < progress["tiles"]:
            server.process.kill()
            server.process.wait(10)
            return
        time.sleep(0.02)
    raise TimeoutError(f"no progress in {status_file}")


def test_a_killed_server_resumes_its_job_and_reports_a_lost_one(
    conv_model, jobs_dir, reference, tmp_path
) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    for name in ("ortho.tif", "doomed.tif"):
        shutil.copy(jobs_dir / "ortho.tif", folder / name)
    first = serve(conv_model, folder, tmp_path)
    try:
        job = submit(first, path="ortho.tif").json()
        doomed = submit(first, path="doomed.tif").json()  # queued behind the first
        _kill_part_way(first, folder / ".jobs" / job["id"] / "status.json")
    finally:
        first.stop()
    saved = json.loads((folder / ".jobs" / job["id"] / "ortho.resume.json").read_text())
    assert 0 < saved["strips_done"] < 8  # 8 strips of 256-pixel windows
    assert json.loads((folder / ".jobs" / job["id"] / "status.json").read_text())["status"] == (
        "running"
    )
    (folder / "doomed.tif").unlink()  # while the server is down

    second = serve(conv_model, folder, tmp_path)
    try:
        lost = wait(second, doomed["id"])
        assert lost["status"] == "lost" and "'doomed.tif' is gone" in lost["error"], lost
        resumed = wait(second, job["id"])
        assert resumed["status"] == "done", resumed
        assert resumed["resumed_strips"] == saved["strips_done"]  # not from zero
        assert 0 < resumed["tiles_run"] < resumed["progress"]["tiles"]
        mask = pixels(fetch(second, resumed, "_mask.tif", tmp_path))[0]
        assert np.array_equal(mask, pixels(reference / "ortho_mask.tif")[0])
    finally:
        assert second.stop() == 0, second.output()
    assert "Traceback" not in second.output()
