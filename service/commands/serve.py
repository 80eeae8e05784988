"""``fcn serve``: the HTTP service. Every option is also an ``FCN_*`` environment variable.

The options are generated from :class:`service.http.settings.Settings`, the one place that
names them, so the command line and the environment can never disagree.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path

# Options with a hand-written flag; every other Settings field becomes --field-name.
_SPECIAL = {"models"}


def _flag_kwargs(name: str, field) -> dict:
    annotation = field.annotation
    default = field.default if field.default is not None else "none"
    if hasattr(default, "get_secret_value"):
        default = "none"
    env = f"FCN_{name.upper()}"
    kwargs: dict = {
        "dest": name,
        "default": None,
        "help": f"{field.description or name} [{env}; default {default}]",
    }
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = args[0]
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(annotation) is typing.Literal:
        kwargs["choices"] = typing.get_args(annotation)
    elif annotation in (int, float):
        kwargs["type"] = annotation
        kwargs["metavar"] = "S" if name.endswith("_s") else "N"
    elif name == "api_key":
        kwargs["metavar"] = "KEY"
        kwargs["help"] += " (prefer the variable: options show in the process list)"
    elif name == "decision_cache":
        kwargs["metavar"] = "FILE"
    elif annotation is Path:
        kwargs["type"] = str
        kwargs["metavar"] = "DIR"
    return kwargs


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``fcn`` parser."""
    from service.http.settings import Settings
    from service.renamed import SERVE_FLAGS, add_renamed_flags, flag

    p = subparsers.add_parser(
        "serve",
        help="serve models over HTTP (POST /v1/segment)",
        description="Serve ONNX segmentation models over HTTP. With no --model and no "
        "--models-dir it serves the two bundled models: 'default' (aerial land cover) and "
        "'demo' (generated shapes). Every option can also be set as an "
        "FCN_* environment variable (the option wins).",
    )
    p.add_argument(
        "--model",
        "-m",
        dest="models",
        action="append",
        metavar="[NAME=]PATH",
        help="a model to serve: PATH, NAME=PATH, 'default' or 'demo'; repeat for several "
        "[FCN_MODELS, comma-separated]",
    )
    flags = {n: _flag_kwargs(n, f) for n, f in Settings.model_fields.items() if n not in _SPECIAL}
    for name, kwargs in flags.items():
        p.add_argument(flag(name), **kwargs)
    add_renamed_flags(p, SERVE_FLAGS, **flags)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the settings (options over environment), the app, and serve until a signal."""
    from service.http.app import create_app
    from service.http.server import serve
    from service.http.settings import Settings
    from service.models import model_sources

    given = {
        name: value
        for name, value in vars(args).items()
        if name in Settings.model_fields and value is not None
    }
    settings = Settings(**given)
    # Resolve now so a bad name or missing folder is a one-line error, not a failed startup.
    sources = model_sources(settings.models, settings.models_dir)
    for source in sources:
        if not source.path.is_file():
            raise ValueError(f"model file not found: {source.path} (model {source.name!r})")
    print(
        f"fcn serve: http://{settings.host}:{settings.port}/ "
        f"(models: {', '.join(s.name for s in sources)}; docs at /docs)",
        flush=True,
    )
    return serve(create_app(settings), settings)
