"""``/v1/models`` says which path serves and why, a path refused on this CPU included.

A real ``fcn serve`` (uvicorn on 127.0.0.1) loads a model whose INT8 sibling fails its
reference check here (simulated: its export record claims more agreement than is possible), so
``--precision auto`` must serve fp32 and name the refusal.
"""

from __future__ import annotations

import httpx

from tests.service.test_backends import checks, model_pair  # noqa: F401 (fixture)
from tests.service.test_reference_check import reference_value, with_reference


def test_models_lists_the_refused_path_and_the_reason(model_pair, serve, tmp_path) -> None:  # noqa: F811
    fp32 = model_pair(checks(ort__int8=-0.1))
    value = reference_value(fp32, {"ort/int8": {"agreement": 102.0, "miou": 100.0}})
    for path in (fp32, fp32.with_name("m.int8.onnx")):
        with_reference(path, value)
    server = serve(
        ["--model", str(fp32), "--no-access-log"],
        env={"FCN_DECISION_CACHE": str(tmp_path / "probe.json")},
    )
    (entry,) = httpx.get(f"{server.url}/v1/models", timeout=10).json()["models"]
    assert (entry["backend"], entry["precision"]) == ("ort", "fp32")
    assert "refused ort/int8 here" in entry["precision_reason"]
    assert entry["precision_checks_here"]["ort/int8"]["passed"] is False
    assert entry["precision_checks_here"]["ort/int8"]["min_agreement"] == 101.0
