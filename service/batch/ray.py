"""``fcn predict --engine ray``: the same batch as :mod:`service.batch.runner`, as a Ray Data job.

The driver scans the inputs with :mod:`service.batch.scan` (the same rules, so the same names),
hands the file list to Ray Data (``from_items``), and ``map_batches`` runs it through a pool
of actors that each load one ONNX Runtime session and call :func:`service.batch.process_item`
— the same decode, infer, encode and atomic write as the local engine — so both write the same
bytes under the same names. Inputs and the output folder must be on storage every node sees
(NFS, a mounted bucket); rows with the status, size, time and class fractions stream back to
the driver for the progress bar and the summary.

``ray`` is an optional extra (``pip install 'fcnseg[ray]'``), imported only when called.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from service.batch.runner import BatchCounts, BatchOptions, ItemResult, process_item
from service.batch.scan import BatchItem
from service.engine import EngineConfig

logger = logging.getLogger(__name__)

# Images per map_batches call: big enough to amortise Ray's per-task cost, small enough that
# progress moves and a failed task redoes little.
ROWS_PER_BATCH = 8


class RayJobError(ValueError):
    """The Ray job itself failed (an actor could not start, a node was lost, ...)."""


class Segmenter:
    """A Ray actor: one ONNX Runtime session, segmenting batches of file rows."""

    def __init__(
        self, model_path: str, config: EngineConfig, out_dir: str, options: BatchOptions
    ) -> None:
        from service.engine import Engine

        self.engine = Engine.load(model_path, config)
        self.out_dir = Path(out_dir)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        num_classes = self.engine.metadata.num_classes
        results = [
            process_item(self.engine, BatchItem(Path(s), Path(t)), self.out_dir, self.options)
            for s, t in zip(batch["source"], batch["stem"], strict=True)
        ]
        fractions = np.full((len(results), num_classes), np.nan)
        for row, result in enumerate(results):
            if result.fractions is not None:
                fractions[row] = result.fractions
        return {
            "index": np.asarray(batch["index"]),
            "status": np.asarray([r.status for r in results]),
            "error": np.asarray([r.error or "" for r in results]),
            "width": np.asarray([r.width or 0 for r in results]),
            "height": np.asarray([r.height or 0 for r in results]),
            "milliseconds": np.asarray([r.milliseconds for r in results]),
            "outputs": np.asarray(["\n".join(map(str, r.outputs)) for r in results]),
            "fractions": fractions,
        }


def _result(item: BatchItem, row: dict[str, Any]) -> ItemResult:
    fractions = np.asarray(row["fractions"], dtype=float)
    return ItemResult(
        item,
        status=str(row["status"]),
        outputs=[Path(p) for p in str(row["outputs"]).split("\n") if p],
        error=str(row["error"]) or None,
        width=int(row["width"]) or None,
        height=int(row["height"]) or None,
        milliseconds=float(row["milliseconds"]),
        fractions=None if np.isnan(fractions).any() else fractions.tolist(),
    )


def run_ray(
    model_path: str | os.PathLike,
    config: EngineConfig,
    items: Sequence[BatchItem],
    out_dir: str | os.PathLike,
    options: BatchOptions | None = None,
    *,
    address: str | None = None,
    actors: int | None = None,
    num_cpus: int | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
) -> BatchCounts:
    """Segment ``items`` on Ray; ``on_result`` is called on the driver, in input order.

    Args:
        model_path: the ONNX file, readable at this path on every node.
        config: engine settings; ``intra_op_threads`` 0 becomes 1 per actor (an actor is
            scheduled on one CPU unless you give it more threads).
        items: from :func:`service.batch.scan.scan_inputs`.
        out_dir: the output folder, writable at this path on every node.
        options: formats, alpha, skip_existing (workers/queue_size are not used).
        address: a running cluster (``auto``, ``ray://host:10001``); None starts a local Ray.
        actors: size of the actor pool; None lets Ray Data scale it to the cluster.
        num_cpus: CPUs of the local Ray started when ``address`` is None.

    Returns:
        How many images succeeded, failed and were skipped.

    Raises:
        ModuleNotFoundError: ray is not installed.
        RayJobError: the job failed as a whole (outputs written so far stay; resume with
            ``skip_existing``).
    """
    import ray

    options = options or BatchOptions()
    threads = config.intra_op_threads or 1
    config = replace(config, intra_op_threads=threads)
    counts = BatchCounts()
    if not items:
        return counts
    started = not ray.is_initialized()
    if started:
        if not logger.isEnabledFor(logging.DEBUG):  # Ray Data logs every stage at INFO
            logging.getLogger("ray").setLevel(logging.WARNING)
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # summary rows in input order
        context.enable_progress_bars = False  # the CLI draws its own
        rows = [
            {"index": i, "source": str(item.source), "stem": str(item.stem)}
            for i, item in enumerate(items)
        ]
        gpus = 1 if config.providers and "CUDAExecutionProvider" in config.providers else 0
        if actors:
            pool = ray.data.ActorPoolStrategy(size=actors)
        else:  # scale with the cluster: as many actors as there are CPUs for them
            most = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
            pool = ray.data.ActorPoolStrategy(min_size=1, max_size=most)
        dataset = ray.data.from_items(rows).map_batches(
            Segmenter,
            fn_constructor_kwargs={
                "model_path": str(Path(model_path).resolve()),
                "config": config,
                "out_dir": str(Path(out_dir).resolve()),
                "options": options,
            },
            batch_size=ROWS_PER_BATCH,
            batch_format="numpy",
            compute=pool,
            num_cpus=threads,
            num_gpus=gpus,
        )
        try:
            for row in dataset.iter_rows():
                result = _result(items[int(row["index"])], row)
                counts.add(result.status)
                if on_result is not None:
                    on_result(result)
        except ray.exceptions.RayError as exc:
            # Per-image failures never get here (process_item captures them): this is the
            # job, e.g. the model file missing on a node. The first line is the reason.
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise RayJobError(f"the Ray job failed: {reason}") from exc
    finally:
        if started:
            ray.shutdown()
    return counts
