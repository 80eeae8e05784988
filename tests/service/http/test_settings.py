"""Settings come from FCN_* variables; command-line options win; bad values are refused."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from service.commands import serve as serve_command
from service.http.app import engine_config
from service.http.settings import Settings, get_settings


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("FCN_PORT", "9123")
    monkeypatch.setenv("FCN_HOST", "0.0.0.0")
    monkeypatch.setenv("FCN_MODELS", "a=/m/a.onnx, b=/m/b.onnx")
    monkeypatch.setenv("FCN_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("FCN_API_KEY", "xyzzy-key")
    monkeypatch.setenv("FCN_MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("FCN_CONCURRENCY", "3")
    monkeypatch.setenv("FCN_MAX_QUEUE", "0")
    monkeypatch.setenv("FCN_SHUTDOWN_GRACE_S", "2.5")
    monkeypatch.setenv("FCN_ACCESS_LOG", "false")
    settings = Settings()
    assert settings.port == 9123 and settings.host == "0.0.0.0"
    assert settings.models == ["a=/m/a.onnx", "b=/m/b.onnx"]
    assert settings.models_dir == tmp_path
    assert settings.api_key.get_secret_value() == "xyzzy-key" and "xyzzy" not in repr(settings)
    assert (settings.max_body_bytes, settings.concurrency, settings.max_queue) == (1000, 3, 0)
    assert settings.shutdown_grace_s == 2.5 and settings.access_log is False


def test_get_settings_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("FCN_PORT", "9001")
    try:
        assert get_settings() is get_settings() and get_settings().port == 9001
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FCN_PORT", "http"),
        ("FCN_CONCURRENCY", "0"),
        ("FCN_DEVICE", "tpu"),
        ("FCN_TILE_OVERLAP", "300"),
        ("FCN_LABEL_STUDIO_URL", "ftp://label-studio"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("FCN_").lower()):
        Settings()


def test_label_studio_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCN_LABEL_STUDIO_URL", "")  # set but empty, as compose passes it: unset
    monkeypatch.setenv("FCN_LABEL_STUDIO_TOKEN", " ")
    monkeypatch.setenv("FCN_LABEL_STUDIO_ALLOWED_HOSTS", "images.example:8443, cdn.example")
    settings = Settings()
    assert settings.label_studio_url is None and settings.label_studio_token is None
    assert settings.label_studio_allowed_hosts == ["images.example:8443", "cdn.example"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_command.register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def serve_help() -> str:
    parser = argparse.ArgumentParser()
    serve_command.register(parser.add_subparsers())
    return parser._subparsers._group_actions[0].choices["serve"].format_help()


def test_every_setting_is_an_option_and_options_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCN_PORT", "9000")
    monkeypatch.setenv("FCN_MAX_QUEUE", "5")
    args = parse(["--port", "9100", "-m", "a=x.onnx", "--model", "y.onnx", "--no-access-log"])
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    settings = Settings(**given)
    assert settings.port == 9100 and settings.max_queue == 5  # option over env; env kept
    assert settings.models == ["a=x.onnx", "y.onnx"] and settings.access_log is False
    defaults = vars(parse([]))
    assert set(Settings.model_fields) <= set(defaults)


def test_intra_op_threads_share_the_cores_among_concurrent_inferences() -> None:
    assert Settings(intra_op_threads=3).resolved_intra_op_threads == 3
    config = engine_config(Settings(concurrency=1, max_pixels=77, max_side=9))
    assert config.intra_op_threads >= 1 and (config.max_pixels, config.max_side) == (77, 9)


def test_the_old_concurrency_variable_still_works_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FCN_CONCURRENCY", raising=False)
    monkeypatch.setenv("FCN_MAX_CONCURRENCY", "3")
    with pytest.warns(DeprecationWarning, match="FCN_MAX_CONCURRENCY .*use FCN_CONCURRENCY"):
        settings = Settings()
    assert settings.concurrency == 3
    monkeypatch.setenv("FCN_CONCURRENCY", "4")  # the new name wins when both are set
    with pytest.warns(DeprecationWarning):
        assert Settings().concurrency == 4


def test_the_old_concurrency_flag_still_works_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FCN_CONCURRENCY", raising=False)
    monkeypatch.delenv("FCN_MAX_CONCURRENCY", raising=False)
    with pytest.warns(DeprecationWarning, match="--max-concurrency .*use --concurrency"):
        args = parse(["--max-concurrency", "3"])
    assert args.concurrency == 3
    assert "--max-concurrency" not in serve_help()
