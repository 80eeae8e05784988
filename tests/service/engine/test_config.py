"""One home for engine settings: the engine, ``fcn serve`` and ``fcn predict`` agree.

``service/engine/config.py`` owns every engine default and derived rule; the HTTP settings and
the ``fcn predict`` flags read it. These tests fail when one of them grows its own value, when
a literal default is written again elsewhere, or when docs/configuration.md drifts.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
from pathlib import Path

import pytest

from service.commands import predict as predict_command
from service.commands import serve as serve_command
from service.engine import EngineConfig
from service.engine import config as ec
from service.http.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
FIELDS = [f.name for f in dataclasses.fields(EngineConfig)]
# Where a command's value differs from the engine's field default on purpose (the reason is
# written beside each rule in service/engine/config.py).
SHARED_CORES = ec.resolve_intra_op_threads(0, ec.DEFAULT_CONCURRENCY)
SERVE_RULES = {"intra_op_threads": SHARED_CORES, "concurrency": ec.DEFAULT_CONCURRENCY}
PREDICT_RULES = {**SERVE_RULES, **ec.BATCH_DEFAULTS}


def parse(command: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    serve_command.register(subparsers)
    predict_command.register(subparsers)
    extra = ("m.onnx", "in", "--out", "out") if command == "predict" else ()
    return parser.parse_args([command, *extra, *argv])


def serve_config(*argv: str) -> EngineConfig:
    args = parse("serve", *argv)
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**given).engine_config()


def test_cli_http_settings_and_engine_agree_on_every_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"FCN_{name.upper()}", raising=False)
    engine = dataclasses.asdict(EngineConfig())
    served = dataclasses.asdict(serve_config())
    predicted = dataclasses.asdict(predict_command.batch_engine_config(parse("predict")))
    assert served == {**engine, **SERVE_RULES}
    assert predicted == {**engine, **PREDICT_RULES}
    # The HTTP settings' own defaults are the engine's (device "auto" is providers None).
    for name, field in Settings.model_fields.items():
        if name in FIELDS:
            assert field.description == ec.engine_help(name), name
            if name not in SERVE_RULES:
                assert field.default == ec.engine_default(name), name
    assert Settings.model_fields["concurrency"].default == ec.DEFAULT_CONCURRENCY
    assert ec.DEVICES[Settings.model_fields["device"].default] == ec.engine_default("providers")


def test_every_engine_setting_is_reachable_from_both_commands() -> None:
    # providers is set through --device in both.
    through_serve = set(Settings.model_fields) | {"providers"}
    through_predict = set(predict_command.ENGINE_FIELDS) | {"providers"}
    assert set(FIELDS) <= through_serve and set(FIELDS) <= through_predict
    served = serve_config("--max-pixels", "77", "--tile-size", "64", "--tile-overlap", "8")
    predicted = predict_command.batch_engine_config(
        parse("predict", "--max-pixels", "77", "--tile-size", "64", "--tile-overlap", "8")
    )
    for config in (served, predicted):
        assert (config.max_pixels, config.tile_size, config.tile_overlap) == (77, 64, 8)
    assert serve_config("--device", "cpu").providers == ("CPUExecutionProvider",)
    assert serve_config("--concurrency", "3").concurrency == 3
    assert (
        predict_command.batch_engine_config(parse("predict", "--concurrency", "3")).concurrency == 3
    )


@pytest.mark.parametrize("command", ["serve", "predict"])
def test_both_commands_refuse_an_overlap_of_half_a_tile(command: str) -> None:
    argv = ("--tile-size", "64", "--tile-overlap", "32")
    with pytest.raises(ValueError, match="tile_overlap must be in"):
        if command == "serve":
            serve_config(*argv)
        else:
            predict_command.batch_engine_config(parse("predict", *argv))


def _literal_values(tree: ast.AST) -> list[object]:
    """Every constant in a module, with constant arithmetic (``1024 * 1024``) folded."""
    values: list[object] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            values.append(node.value)
        elif isinstance(node, ast.BinOp) and all(
            isinstance(n, ast.Constant | ast.BinOp | ast.operator) for n in ast.walk(node)
        ):
            values.append(eval(compile(ast.Expression(node), "<const>", "eval")))  # noqa: S307
    return values


@pytest.mark.parametrize(
    "path", ["service/http/settings.py", "service/commands/predict.py", "service/http/app.py"]
)
def test_no_engine_default_is_written_again(path: str) -> None:
    # Numbers distinctive enough to be a copy (0, 1 and "auto" are everywhere for other reasons).
    distinctive = [
        v for v in map(ec.engine_default, FIELDS) if isinstance(v, int) and not isinstance(v, bool)
    ]
    distinctive = [v for v in distinctive if v > 2]
    assert len(distinctive) == 5  # max_pixels, max_side, tile size/overlap/threshold
    tree = ast.parse((ROOT / path).read_text())
    for value in _literal_values(tree):
        if isinstance(value, int) and not isinstance(value, bool):
            assert value not in distinctive, f"{path} writes the engine default {value} again"
        elif isinstance(value, str):
            for number in distinctive:
                assert not re.search(rf"\b{number}\b", value), f"{path}: {value!r}"


def test_usable_cores_follows_a_container_cpu_limit(tmp_path: Path) -> None:
    affinity = ec.usable_cores(tmp_path / "none")
    (tmp_path / "cpu.max").write_text("max 100000\n")  # cgroup v2, no limit
    assert ec.usable_cores(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # --cpus 0.5 rounds up to one core
    assert ec.usable_cores(tmp_path) == 1
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert ec.usable_cores(v1) == affinity
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text(str(100000 * (affinity + 5)))
    assert ec.usable_cores(v1) == affinity  # a limit above the affinity does not add cores


def test_intra_op_threads_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ec, "usable_cores", lambda: 8)
    assert [ec.resolve_intra_op_threads(0, n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
    assert ec.resolve_intra_op_threads(5, 2) == 5


def test_the_configuration_page_lists_every_setting_with_its_default() -> None:
    rows = {}
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`[a-z_]+`", cells[0]):
            rows[cells[0].strip("`")] = cells
    assert set(FIELDS) <= set(rows), sorted(set(FIELDS) - set(rows))
    for name in FIELDS:
        _, predict_flag, serve_flag, default, _why = rows[name]
        if name in predict_command.ENGINE_FIELDS:
            assert f"`--{name.replace('_', '-')}`" in predict_flag, name
        if name in Settings.model_fields:
            assert f"`--{name.replace('_', '-')}`" in serve_flag, name
            assert f"`FCN_{name.upper()}`" in serve_flag, name
        if name not in PREDICT_RULES and name != "providers":  # those are described in words
            shown = default.replace(",", "").replace("`", "")
            assert str(ec.engine_default(name)).lower() in shown.lower(), (name, default)


def _help(command: str) -> str:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    serve_command.register(subparsers)
    predict_command.register(subparsers)
    return " ".join(subparsers.choices[command].format_help().split())


def test_help_texts_show_the_defaults_in_force() -> None:
    from service.batch.runner import BatchOptions

    predict_help, serve_help = _help("predict"), _help("serve")
    # --queue-size: one default for the command and the runner it fills in
    assert parse("predict").queue_size == BatchOptions.queue_size == ec.BATCH_QUEUE_SIZE
    assert f"images in flight per stage (default: {ec.BATCH_QUEUE_SIZE})" in predict_help
    # --device: one help text, one default, in both commands
    assert f"{ec.DEVICE_HELP} (default: {ec.DEFAULT_DEVICE})" in predict_help
    assert f"{ec.DEVICE_HELP} [FCN_DEVICE; default {ec.DEFAULT_DEVICE}]" in serve_help
    assert parse("predict").device == Settings.model_fields["device"].default == ec.DEFAULT_DEVICE
    # every engine flag: the engine's help, with the value each command runs with
    for name in predict_command.ENGINE_FIELDS:
        shown = ec.engine_help(name)
        default = ec.batch_default(name)
        raster = ec.batch_default(name, raster=True)
        if raster != default:  # rasters' own default is said beside the images'
            default = f"{default}; {raster} for rasters"
        assert f"{shown} (default: {default})" in predict_help, name
        default = Settings.model_fields[name].default
        default = "none" if default is None else default  # as fcn serve's help writes it
        assert f"{shown} [FCN_{name.upper()}; default {default}]" in serve_help, name
    # the old names are accepted but not advertised
    for old in ("--threads ", "--inter-threads", "--infer-threads", "--max-concurrency"):
        assert old not in predict_help and old not in serve_help, old
