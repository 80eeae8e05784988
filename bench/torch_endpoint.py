"""What a user would otherwise write: a plain FastAPI endpoint running the torch model eagerly.

Used by bench/http_bench.py as the baseline. The model is rebuilt by ``fcn.build_model`` from
the checkpoint named by ``FCN_BENCH_CHECKPOINT`` (the same one the ONNX file was exported from).
Run: ``FCN_BENCH_CHECKPOINT=best.pt uvicorn bench.torch_endpoint:app``.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from fastapi import FastAPI, File, Response, UploadFile
from PIL import Image

from training.checkpoint import load_model

model, config = load_model(os.environ["FCN_BENCH_CHECKPOINT"])
mean = torch.tensor(config["data"]["mean"], dtype=torch.float32).view(1, -1, 1, 1)
std = torch.tensor(config["data"]["std"], dtype=torch.float32).view(1, -1, 1, 1)
app = FastAPI()


@app.post("/v1/segment")
def segment(image: UploadFile = File(...)) -> Response:  # noqa: B008 - FastAPI style
    pixels = np.asarray(Image.open(image.file).convert("RGB"))
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(255.0)
    with torch.inference_mode():
        mask = model((x - mean) / std).argmax(1)[0].to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
