"""One fine-tune, run as subprocesses: import -> train -> export (INT8 + checks) -> gate scores.

The service imports no torch, and training must not slow its requests more than sharing the
CPU does, so every step is its own ``python -m fcn ...`` process:

1. ``fcn data import-label-studio`` for the training tasks and for the held-out tasks (images
   from Label Studio, masks from the annotations, classes from the serving model);
2. ``fcn train --init PARENT --max-minutes M`` on them (the held-out tasks are its validation
   split: scored, never trained on);
3. ``fcn export`` (fp32, with its parity check), then ``fcn export --onnx --quantize int8`` with
   the INT8 precision checks; a candidate whose INT8 copy fails them is served (and gated) as
   its fp32 file, said in :attr:`Candidate.note`;
4. ``fcn evaluate --model`` of the candidate and of the parent on the held-out tasks: the gate's
   two numbers, each as the service would serve that file (``--precision auto``).

A step that fails (or is killed) raises :class:`StepFailed` naming it; the work folder is the
run's alone and the next run starts in a fresh one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.loop.tasks import Annotated

logger = logging.getLogger(__name__)


class StepFailed(RuntimeError):
    """A pipeline step exited non-zero or was killed; ``step`` names it."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


@dataclass
class Job:
    """What one run trains on and from."""

    work: Path
    parent: Path  # the file served when the run started (the gate's baseline)
    init: Path  # what training starts from: the parent's fp32 model when stored, else parent
    train: list[Annotated]
    heldout: list[Annotated]
    minutes: float
    label_studio_url: str
    token: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)


@dataclass
class Candidate:
    """What a run produced: the served (INT8) file, its fp32 model and the gate's scores."""

    served: Path
    fp32: Path
    miou: float
    parent_miou: float
    per_class: dict[str, Any]
    parent_per_class: dict[str, Any]
    note: str = ""  # e.g. why it is served as fp32


Launcher = Callable[[list[str], dict[str, str], Path], subprocess.Popen]


# The fine-tune's peak learning rate: a tenth of training from scratch's. On the Dubai set, 7
# steps from the default at 2e-3 lost 4.8 mIoU points on 4 validation images, at 2e-4 gained 0.4.
FINE_TUNE_LR = 2e-4
# Steps run at a lower CPU priority than the server: on a shared CPU, requests go first and
# training gets the cycles they leave.
NICE = 10


def _launch(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 (the child writes it; closed after wait)
    try:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()
    if hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, process.pid, NICE)
        except OSError:  # it may already have exited
            pass
    return process


def _fcn(*args: str) -> list[str]:
    return [sys.executable, "-m", "fcn", *args]


class Pipeline:
    """Runs a :class:`Job`'s steps one after another; :meth:`kill` stops the current one."""

    def __init__(self, launcher: Launcher = _launch) -> None:
        self.launcher = launcher
        self.process: subprocess.Popen | None = None
        self.killed = False

    def kill(self) -> None:
        """Stop the running step (the run then fails with :class:`StepFailed`)."""
        self.killed = True
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()

    def _step(self, name: str, argv: list[str], job: Job) -> None:
        if self.killed:
            raise StepFailed(name, "the run was stopped")
        env = dict(os.environ)
        if job.token:
            env["LABEL_STUDIO_API_KEY"] = job.token  # not on the command line (ps shows it)
        log = job.work / "steps.log"
        with open(log, "ab") as f:
            f.write(f"\n$ {' '.join(argv)}\n".encode())
        self.process = self.launcher(argv, env, log)
        code = self.process.wait()
        self.process = None
        if code != 0:
            tail = log.read_text(errors="replace")[-1500:]
            why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise StepFailed(name, f"{why}; the end of its output:\n{tail}")

    def _import(self, job: Job, tasks: list[Annotated], name: str) -> Path:
        export = job.work / f"{name}.json"
        export.write_text(json.dumps([t.task for t in tasks]))
        out = job.work / "data" / name
        argv = _fcn("data", "import-label-studio", str(export), "--out", str(out))
        argv += ["--model", str(job.parent), "--label-studio-url", job.label_studio_url]
        for host in job.allowed_hosts:
            argv += ["--allow-host", host]
        self._step(f"import {name} tasks", argv, job)
        return out

    def _score(self, job: Job, model: Path, name: str) -> dict[str, Any]:
        out = job.work / f"{name}.scores.json"
        argv = _fcn("evaluate", "--model", str(model), "--data", str(job.work / "data"))
        argv += ["--layout", "split", "--split", "val", "--json", str(out)]
        self._step(f"score the {name} on the held-out tasks", argv, job)
        return json.loads(out.read_text())

    def run(self, job: Job) -> Candidate:
        """All steps; returns the candidate and both scores.

        Raises:
            StepFailed: a step failed or was killed.
        """
        job.work.mkdir(parents=True, exist_ok=True)
        self._import(job, job.train, "train")
        self._import(job, job.heldout, "val")
        shutil.copyfile(
            job.work / "data" / "train" / "dataset.json", job.work / "data" / "dataset.json"
        )
        run = job.work / "run"
        argv = _fcn("train", "--data", str(job.work / "data"), "--layout", "split")
        argv += ["--init", str(job.init), "--max-minutes", f"{job.minutes:g}", "--out", str(run)]
        argv += ["--device", "cpu", "--no-plots", "--seed", "0", "--lr", f"{FINE_TUNE_LR:g}"]
        self._step("fine-tune", argv, job)
        fp32, served = job.work / "candidate.fp32.onnx", job.work / "candidate.onnx"
        argv = _fcn("export", "--checkpoint", str(run / "last.pt"), "--out", str(fp32))
        self._step("export", argv, job)
        argv = _fcn("export", "--onnx", str(fp32), "--quantize", "int8", "--int8-out", str(served))
        argv += ["--calibration-data", str(job.work / "data")]
        note = ""
        try:
            self._step("INT8 copy with its checks", argv, job)
        except StepFailed as exc:
            if self.killed:
                raise
            served, note = fp32, "served as fp32: its INT8 copy failed the checks"
            logger.warning("%s (%s)", note, str(exc).splitlines()[-1][:300])
        candidate = self._score(job, served, "candidate")
        parent = self._score(job, job.parent, "parent")
        return Candidate(
            served=served,
            fp32=fp32,
            miou=float(candidate["miou"]),
            parent_miou=float(parent["miou"]),
            per_class=dict(
                zip(candidate.get("classes") or [], candidate["per_class_iou"], strict=False)
            ),
            parent_per_class=dict(
                zip(parent.get("classes") or [], parent["per_class_iou"], strict=False)
            ),
            note=note,
        )
