"""Admission control on its own: slots, FIFO queue, refusals, draining, cancelled clients."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.http.admission import Admission, AdmissionRefused


def blocking_job(gate: threading.Event, name: str, log: list[str]):
    def job() -> str:
        assert gate.wait(10)
        log.append(name)
        return name

    return job


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


def test_slots_then_queue_then_refusal_at_once() -> None:
    async def scenario() -> None:
        admission = Admission(concurrency=1, max_queue=2, queue_timeout_s=10)
        admission.start()
        gate, log = threading.Event(), []
        tasks = [
            asyncio.create_task(admission.run(blocking_job(gate, f"job{i}", log))) for i in range(3)
        ]
        await settle()
        assert (admission.active, admission.queued) == (1, 2)
        with pytest.raises(AdmissionRefused) as refused:
            admission.check()
        assert refused.value.reason == "queue_full"
        with pytest.raises(AdmissionRefused):
            await asyncio.wait_for(admission.run(lambda: "late"), 1)  # refused, not queued
        gate.set()
        assert await asyncio.gather(*tasks) == ["job0", "job1", "job2"]
        assert log == ["job0", "job1", "job2"]  # first come, first served
        assert admission.idle
        admission.stop()

    asyncio.run(scenario())


def test_queue_timeout_is_a_rejection_and_frees_the_place() -> None:
    async def scenario() -> None:
        admission = Admission(concurrency=1, max_queue=1, queue_timeout_s=0.2)
        admission.start()
        gate = threading.Event()
        running = asyncio.create_task(admission.run(blocking_job(gate, "a", [])))
        await settle()
        with pytest.raises(AdmissionRefused) as waited:
            await admission.run(lambda: "b")
        assert waited.value.reason == "queue_timeout"
        assert admission.queued == 0
        gate.set()
        assert await running == "a"
        assert admission.idle
        admission.stop()

    asyncio.run(scenario())


def test_draining_refuses_new_work_but_finishes_accepted_work() -> None:
    async def scenario() -> None:
        admission = Admission(concurrency=1, max_queue=1, queue_timeout_s=10)
        admission.start()
        gate = threading.Event()

        async def request(name: str) -> str:
            with admission.accepted():
                await asyncio.sleep(0.05)  # the body still arriving when the drain starts
                return await admission.run(blocking_job(gate, name, []))

        first = asyncio.create_task(request("a"))
        second = asyncio.create_task(request("b"))
        await asyncio.sleep(0.01)
        admission.start_draining()
        assert not admission.idle
        with pytest.raises(AdmissionRefused) as refused, admission.accepted():
            pass
        assert refused.value.reason == "draining"
        await settle()
        assert (admission.active, admission.queued) == (1, 1)
        gate.set()
        assert await asyncio.gather(first, second) == ["a", "b"]
        assert admission.idle
        admission.stop()

    asyncio.run(scenario())


def test_a_cancelled_request_keeps_its_slot_until_the_thread_finishes() -> None:
    async def scenario() -> None:
        admission = Admission(concurrency=1, max_queue=0, queue_timeout_s=10)
        admission.start()
        gate = threading.Event()
        task = asyncio.create_task(admission.run(blocking_job(gate, "a", [])))
        await settle()
        task.cancel()  # the client went away; ONNX Runtime cannot be interrupted
        await settle()
        assert admission.active == 1
        with pytest.raises(AdmissionRefused):
            admission.check()
        gate.set()
        await settle()
        assert admission.idle
        admission.stop()

    asyncio.run(scenario())


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Admission(concurrency=0, max_queue=1, queue_timeout_s=1)
