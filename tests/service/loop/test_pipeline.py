"""The pipeline's real subprocesses on bad input: a task whose image is gone, labels that are not
the model's classes. Each fails its step with a message naming the problem."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.loop.pipeline import Job, Pipeline, StepFailed
from service.loop.tasks import annotated_tasks
from tests.brush_regions import brush_region


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _task(task_id: int, image: str, label: str, width: int = 16, height: int = 12) -> dict:
    painted = np.zeros((height, width), bool)
    painted[2:8, 3:11] = True
    region = brush_region(painted, label)
    return {
        "id": task_id,
        "data": {"image": image},
        "annotations": [{"id": 50 + task_id, "result": [region], "updated_at": "t"}],
    }


def _job(tmp_path, conv_model, label_studio, tasks) -> Job:
    annotated = annotated_tasks(tasks)
    return Job(
        work=tmp_path / "work",
        parent=conv_model,
        init=conv_model,
        train=annotated[:1],
        heldout=annotated[1:],
        minutes=0.1,
        label_studio_url=label_studio.url,
        token="secret-token",
    )


def test_a_task_whose_image_is_gone_fails_the_import(tmp_path, conv_model, label_studio) -> None:
    label_studio.files["/data/upload/1/a.png"] = _png(16, 12)
    tasks = [
        _task(1, "/data/upload/1/gone.png", "class1"),
        _task(2, "/data/upload/1/a.png", "class2"),
    ]
    with pytest.raises(StepFailed) as failed:
        Pipeline().run(_job(tmp_path, conv_model, label_studio, tasks))
    assert failed.value.step == "import train tasks"
    assert "gone.png" in str(failed.value) and "404" in str(failed.value)
    # The token went to Label Studio in a header, never on a command line.
    assert ("/data/upload/1/gone.png", "Token secret-token") in label_studio.requests
    assert "secret-token" not in (tmp_path / "work" / "steps.log").read_text()


def test_labels_that_are_not_the_models_classes_fail_the_import(
    tmp_path, conv_model, label_studio
) -> None:
    label_studio.files["/data/upload/1/a.png"] = _png(16, 12)
    tasks = [_task(1, "/data/upload/1/a.png", "cloud"), _task(2, "/data/upload/1/a.png", "class2")]
    with pytest.raises(StepFailed) as failed:
        Pipeline().run(_job(tmp_path, conv_model, label_studio, tasks))
    assert failed.value.step == "import train tasks"
    assert "'cloud'" in str(failed.value) and "class0, class1, class2, class3" in str(failed.value)


class _Done:
    """A finished step: what :class:`Pipeline` needs of a ``Popen``."""

    def __init__(self, code: int) -> None:
        self.code = code

    def wait(self) -> int:
        return self.code

    def poll(self) -> int:
        return self.code


def test_a_candidate_whose_int8_copy_fails_is_scored_as_fp32(tmp_path, conv_model) -> None:
    import json

    steps = []

    def launcher(argv, env, log):
        steps.append(argv)
        if "import-label-studio" in argv:
            out = Path(argv[argv.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "dataset.json").write_text("{}")
        if "evaluate" in argv:  # the candidate is the model file evaluated first
            model = argv[argv.index("--model") + 1]
            report = {"miou": 0.6 if "candidate" in model else 0.5, "per_class_iou": []}
            Path(argv[argv.index("--json") + 1]).write_text(json.dumps({**report, "model": model}))
        return _Done(2 if "--quantize" in argv else 0)  # the INT8 copy fails its checks

    job = Job(
        work=tmp_path / "work",
        parent=conv_model,
        init=conv_model,
        train=[],
        heldout=[],
        minutes=0.1,
        label_studio_url="http://127.0.0.1:9",
    )
    candidate = Pipeline(launcher).run(job)
    assert candidate.served == candidate.fp32 == job.work / "candidate.fp32.onnx"
    assert "served as fp32" in candidate.note and candidate.miou == 0.6
    scored = [argv[argv.index("--model") + 1] for argv in steps if "evaluate" in argv]
    assert scored == [str(candidate.fp32), str(conv_model)]
