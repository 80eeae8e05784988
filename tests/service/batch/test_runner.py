"""``fcn predict`` end to end: folders, sub-folders, formats, bad files, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn.cli import main
from service.batch.scan import scan_inputs


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (9, 7), dtype=np.uint8)).save(root / "sub" / "b.jpg")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "notes.txt").write_text("not an image, and not picked up by a folder scan")
    return root


def test_folder_with_a_bad_file(conv_model: Path, folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["predict", str(conv_model), str(folder), "--out", str(out), "-r"]
    code = main([*argv, "--format", "index,json", "-f", "overlay", "--intra-op-threads", "1"])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png" in captured.err and "corrupt" in captured.err
    assert "Traceback" not in captured.out + captured.err
    assert "2 ok, 1 failed" in captured.out

    mask = np.asarray(Image.open(out / "a_mask.png"))
    assert mask.shape == (20, 30) and mask.max() < 4
    assert np.asarray(Image.open(out / "sub" / "b_mask.png")).shape == (9, 7)
    assert Image.open(out / "sub" / "b_overlay.png").size == (7, 9)
    report = json.loads((out / "a.json").read_text())
    assert sum(c["pixels"] for c in report["classes"]) == 20 * 30
    assert not list(out.glob("broken*")) and not list(out.glob("notes*"))


def test_all_good_files_exit_zero_and_non_recursive_skips_sub_folders(
    conv_model: Path, folder: Path, tmp_path: Path, capsys
) -> None:
    (folder / "broken.png").unlink()
    out = tmp_path / "out"
    argv = ["predict", str(conv_model), str(folder), "--out", str(out), "-f", "color"]
    assert main([*argv, "--no-recursive"]) == 0
    assert (out / "a_color.png").is_file() and not (out / "sub").exists()
    assert main(argv) == 0  # recursive by default
    assert (out / "sub" / "b_color.png").is_file()
    capsys.readouterr()


def test_explicit_files_and_missing_paths(conv_model: Path, folder: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    inputs = [str(folder / "notes.txt"), str(folder / "sub" / "b.jpg"), str(tmp_path / "gone.png")]
    code = main(["predict", str(conv_model), *inputs, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "notes.txt" in captured.err and "unsupported image format" in captured.err
    assert "gone.png: no such file" in captured.err
    assert (out / "b_mask.png").is_file()  # a named file lands at the top of --out


def test_bad_model_is_one_clean_error(tmp_path: Path, folder: Path, capsys) -> None:
    code = main(["predict", str(tmp_path / "missing.onnx"), str(folder), "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    assert "model file not found" in captured.err and "Traceback" not in captured.err


def test_bad_format_is_a_usage_error(conv_model: Path, folder: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["predict", str(conv_model), str(folder), "--out", str(tmp_path), "-f", "tiff"])
    assert info.value.code == 2


def test_output_name_collisions_are_reported(folder: Path) -> None:
    Image.new("RGB", (2, 2)).save(folder / "a.bmp")
    scan = scan_inputs([folder], recursive=True)
    stems = [item.stem for item in scan.items]
    assert len(stems) == len(set(stems)) == 3  # a.bmp (first sorted), broken.png, sub/b.jpg
    assert len(scan.rejected) == 1 and "already used" in scan.rejected[0].reason


def test_tiling_options_reach_the_engine(conv_model: Path, folder: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    argv = ["predict", str(conv_model), str(folder / "a.png"), "--out", str(out)]
    tiny = ["--tile-threshold", "10", "--tile-size", "8", "--tile-overlap", "2"]
    assert main([*argv, *tiny]) == 0
    tiled = np.asarray(Image.open(out / "a_mask.png"))
    assert main([*argv, "--tile-threshold", "100000"]) == 0
    plain = np.asarray(Image.open(out / "a_mask.png"))
    assert tiled.shape == plain.shape == (20, 30)
    # 8-pixel tiles are smaller than the 15-pixel receptive field: close, but not identical.
    assert 0.8 < (tiled == plain).mean() < 1.0
    assert main([*argv, "--tile-size", "8", "--tile-overlap", "4"]) == 2  # overlap >= size / 2
    assert "tile_overlap" in capsys.readouterr().err


def test_summary_csv_and_json_have_one_row_per_input(
    conv_model: Path, folder: Path, tmp_path: Path, capsys
) -> None:
    argv = ["predict", str(conv_model), str(folder), str(tmp_path / "gone.png")]
    for name in ("s.csv", "s.json"):
        summary = tmp_path / name
        code = main([*argv, "--out", str(tmp_path / "out"), "--summary", str(summary)])
        assert code == 1
        if name.endswith(".csv"):
            import csv

            rows = list(csv.DictReader(summary.open()))
        else:
            rows = json.loads(summary.read_text())
        by_name = {Path(r["path"]).name: r for r in rows}
        assert set(by_name) == {"a.png", "b.jpg", "broken.png", "gone.png"}
        good = by_name["a.png"]
        assert (int(good["width"]), int(good["height"]), good["status"]) == (30, 20, "ok")
        assert float(good["milliseconds"]) > 0 and not good["error"]
        fractions = [float(good[f"fraction_class{i}"]) for i in range(4)]
        mask = np.asarray(Image.open(tmp_path / "out" / "a_mask.png"))
        assert fractions == pytest.approx([(mask == i).mean() for i in range(4)])
        assert by_name["broken.png"]["status"] == "failed"
        assert "corrupt" in by_name["broken.png"]["error"]
        assert by_name["gone.png"]["status"] == "failed"
    capsys.readouterr()


def test_one_line_per_failure_no_bar_off_a_terminal_unless_asked(
    conv_model: Path, folder: Path, tmp_path: Path, capsys
) -> None:
    argv = ["predict", str(conv_model), str(folder), "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.count("FAILED") == 1 and "img/s" not in captured.err
    assert captured.out.strip().splitlines()[-1].startswith("2 ok, 1 failed, 0 skipped")
    assert main([*argv, "--progress"]) == 1
    captured = capsys.readouterr()
    assert "3/3" in captured.err and "img/s" in captured.err
    assert captured.err.count("FAILED") == 1


def test_usage_errors_exit_two_with_the_flag_named(
    conv_model: Path, folder: Path, tmp_path: Path, capsys
) -> None:
    argv = ["predict", str(conv_model), str(folder), "--out", str(tmp_path / "out")]
    assert main([*argv, "--summary", str(tmp_path / "s.txt")]) == 2
    assert "--summary: summary file must end in .csv or .json" in capsys.readouterr().err
    assert main([*argv, "--alpha", "2"]) == 2
    assert "--alpha: alpha must be in [0, 1]" in capsys.readouterr().err
    assert main([*argv, "--glob", "*.gif"]) == 2
    assert "no images matching --glob found" in capsys.readouterr().err


def test_library_errors_do_not_mention_flags(tmp_path: Path) -> None:
    from service.batch.runner import BatchOptions
    from service.batch.summary import SummaryWriter

    for make in (
        lambda: SummaryWriter(tmp_path / "s.txt", ["a"]),
        lambda: BatchOptions(alpha=3.0),
        lambda: BatchOptions(formats=("tiff",)),
        lambda: BatchOptions(workers=0),
    ):
        with pytest.raises(ValueError) as info:
            make()
        assert "--" not in str(info.value)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice is a Linux feature")
def test_worker_threads_run_at_a_lower_priority_than_the_model() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from service.batch.runner import _lower_priority

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    main_nice = nice()
    with ThreadPoolExecutor(1, initializer=_lower_priority, initargs=(5,)) as pool:
        assert pool.submit(nice).result() == min(19, main_nice + 5)
    assert nice() == main_nice  # only the worker thread changed


@pytest.mark.parametrize("concurrency", [1, 2])
def test_images_in_flight_stay_bounded(
    conv_model: Path, tmp_path: Path, monkeypatch, concurrency: int
) -> None:
    """Decoded images alive at any time stay under the queue bounds, whatever the count."""
    import threading
    import weakref

    from service.batch import runner as batch
    from service.batch.scan import BatchItem
    from service.engine import Engine

    source = tmp_path / "x.png"
    Image.new("RGB", (16, 12), (9, 99, 199)).save(source)
    items = [BatchItem(source, Path(f"img{i:03d}")) for i in range(60)]
    alive, peak, lock = set(), [0], threading.Lock()
    real_decode = batch.pipeline.decode

    def counting_decode(engine, src, *args, **kwargs):
        pixels, ms = real_decode(engine, src, *args, **kwargs)
        key = id(pixels)
        with lock:
            alive.add(key)
            peak[0] = max(peak[0], len(alive))
        weakref.finalize(pixels, alive.discard, key)
        return pixels, ms

    monkeypatch.setattr(batch.pipeline, "decode", counting_decode)
    options = batch.BatchOptions(workers=2, queue_size=3, concurrency=concurrency, worker_nice=0)
    seen = []
    counts = batch.run_batch(
        Engine.load(conv_model), items, tmp_path / "out", options, on_result=seen.append
    )
    assert counts.ok == 60
    assert [r.item.stem.name for r in seen] == [f"img{i:03d}" for i in range(60)]  # in order
    # The window: 2 x queue_size + concurrency images between submission and report.
    assert 2 <= peak[0] <= 2 * 3 + concurrency


def test_memory_arena_flag_reaches_the_engine_and_changes_no_byte(
    conv_model: Path, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.engine import Engine

    seen = []
    load = Engine.load.__func__

    def spy(cls, path, config=None):
        seen.append(config.memory_arena)
        return load(cls, path, config)

    monkeypatch.setattr(Engine, "load", classmethod(spy))
    outputs = {}
    for flag in ("--memory-arena", "--no-memory-arena", None):
        out = tmp_path / f"out{flag}"
        argv = ["predict", str(conv_model), str(folder / "a.png"), "--out", str(out)]
        assert main(argv + ([flag] if flag else [])) == 0
        outputs[flag] = (out / "a_mask.png").read_bytes()
    assert seen == [True, False, True]  # on unless switched off
    assert outputs["--memory-arena"] == outputs["--no-memory-arena"] == outputs[None]


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("--threads", "--intra-op-threads", "intra_op_threads"),
        ("--inter-threads", "--inter-op-threads", "inter_op_threads"),
        ("--infer-threads", "--concurrency", "concurrency"),
    ],
)
def test_the_old_predict_flags_still_work_with_a_warning(old: str, new: str, field: str) -> None:
    import argparse

    from service.commands import predict as predict_command

    parser = argparse.ArgumentParser()
    predict_command.register(parser.add_subparsers())
    with pytest.warns(DeprecationWarning, match=f"{old} .*use {new}"):
        args = parser.parse_args(["predict", "m.onnx", "in", "--out", "o", old, "3"])
    assert getattr(args, field) == 3
    config = predict_command.batch_engine_config(args)
    assert getattr(config, field) == 3
