"""JobRunner.recover after a restart: what goes on, and what is reported lost and why."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from service.jobs.runner import JobRunner
from service.jobs.store import JobRequest, JobStore
from tests.service.geo.rasters import write_geotiff


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def engine(conv_model):
    from service.engine import Engine
    from service.engine.config import EngineConfig

    config = EngineConfig(concurrency=1, intra_op_threads=1, tile_size=64, tile_overlap=16)
    return Engine.load(conv_model, config)


@pytest.fixture
def setup(engine, tmp_path):
    """A jobs folder with a raster, a store and a served model ``conv`` at version ``v1``."""
    pixels = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    write_geotiff(tmp_path / "ortho.tif", pixels)
    store = JobStore(tmp_path)
    served = {"conv": SimpleNamespace(engine=engine, version="v1")}
    return store, served


def add_job(store: JobStore, status: str, version: str = "v1") -> str:
    job_id = store.new()
    request = JobRequest(str(store.root / "ortho.tif"), "ortho.tif", "conv", version)
    store.create(job_id, request)
    store.update(job_id, status=status)
    return job_id


def kill_after_one_strip(engine, store: JobStore, job_id: str) -> None:
    """What a process killed mid-job leaves: the partial rasters and the sidecar."""
    from service.geo.run import GeoOptions, segment_raster

    def die(strip) -> None:
        raise Killed

    options = GeoOptions(resume=True, streams=1, model="conv")
    with pytest.raises(Killed):
        segment_raster(
            engine, store.root / "ortho.tif", store.dir(job_id) / "ortho", options, after_strip=die
        )


def recovered(store, served) -> JobRunner:
    runner = JobRunner(store, served.get, streams=1)
    runner.recover()
    return runner


def test_queued_and_resumable_jobs_are_queued_again(engine, setup) -> None:
    store, served = setup
    queued = add_job(store, "queued")
    running = add_job(store, "running")
    kill_after_one_strip(engine, store, running)
    fresh = add_job(store, "running")  # killed before its first strip: nothing to lose
    done = add_job(store, "done")
    runner = recovered(store, served)
    assert list(runner._queue) == [queued, running, fresh]
    assert [store.read(j)["status"] for j in (queued, running, fresh, done)] == [
        "queued",
        "queued",
        "queued",
        "done",
    ]
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while store.read(fresh)["status"] != "done" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop()
    assert store.read(running)["resumed_strips"] == 1
    assert store.read(fresh)["resumed_strips"] == 0


@pytest.mark.parametrize(
    ("break_it", "reason"),
    [
        ("model", "model 'conv' is no longer served"),
        ("version", "model 'conv' is now version v2; the job started with v1"),
        ("input", "its input 'ortho.tif' is gone"),
        ("changed", "no longer matches the input"),
        ("sidecar", "no longer matches the input"),
        ("request", "its request file is unreadable"),
    ],
)
def test_a_job_that_cannot_go_on_is_lost_with_the_reason(engine, setup, break_it, reason) -> None:
    store, served = setup
    job_id = add_job(store, "running")
    kill_after_one_strip(engine, store, job_id)
    if break_it == "model":
        served = {}
    elif break_it == "version":
        served = {"conv": SimpleNamespace(engine=engine, version="v2")}
    elif break_it == "input":
        (store.root / "ortho.tif").unlink()
    elif break_it == "changed":  # another raster under the same name
        write_geotiff(store.root / "ortho.tif", np.zeros((300, 200, 3), np.uint8))
    elif break_it == "sidecar":
        (store.dir(job_id) / "ortho.resume.json").write_text("{not json")
    else:
        (store.dir(job_id) / "request.json").write_text(json.dumps({"input": 1}))
    runner = recovered(store, served)
    status = store.read(job_id)
    assert status["status"] == "lost" and reason in status["error"], status
    assert not runner._queue


def test_a_job_stopped_with_the_service_is_queued_again_and_resumes(engine, setup) -> None:
    store, served = setup
    job_id = add_job(store, "queued")
    runner = JobRunner(store, served.get, streams=1)
    original = store.update

    def update(job, expect=None, **changes):
        done = original(job, expect, **changes)
        if "progress" in changes:  # after the first strip: what stop() sets, seen between strips
            runner._stopping.set()
        return done

    store.update = update
    runner.start()
    runner._thread.join(60)
    store.update = original
    status = store.read(job_id)
    assert status["status"] == "queued" and 0 < status["progress"]["tiles_done"]
    assert (store.dir(job_id) / "ortho.resume.json").exists()
    again = JobRunner(store, served.get, streams=1)
    again.start()
    deadline = time.monotonic() + 60
    while store.read(job_id)["status"] != "done" and time.monotonic() < deadline:
        time.sleep(0.05)
    again.stop()
    assert store.read(job_id)["resumed_strips"] == 1
