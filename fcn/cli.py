"""The ``fcn`` console command.

A thin dispatcher: it imports no torch and no onnxruntime. Each package that provides
subcommands has a ``cli`` module with ``register(subparsers)``; those modules import their
heavy implementation inside the command function, so ``fcn --help`` is instant and works
with only the ``serve`` extra installed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from fcn import __version__

# Modules that contribute subcommands, in the order their commands are listed.
COMMAND_MODULES = ("training.cli", "service.cli")

# Top-level Python modules -> the pip extra that installs them.
EXTRA_FOR_MODULE = {
    "torch": "train",
    "torchvision": "train",
    "segmentation_models_pytorch": "train",
    "albumentations": "train",
    "onnx": "train",
    "onnxscript": "train",
    "tqdm": "serve",
    "matplotlib": "train",
    "onnxruntime": "serve",
    "numpy": "serve",
    "PIL": "serve",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "pydantic_settings": "serve",
    "prometheus_client": "serve",
    "ray": "ray",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcn",
        description="Train fully convolutional segmentation models, export them to ONNX and serve them.",
    )
    parser.add_argument("--version", action="version", version=f"fcn {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages and show tracebacks"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def missing_extra_message(command: str, error: ModuleNotFoundError) -> str | None:
    """Return a user-facing message if ``error`` is a dependency that a pip extra provides."""
    top = (error.name or "").split(".")[0]
    extra = EXTRA_FOR_MODULE.get(top)
    if extra is None:
        return None
    return (
        f"fcn {command}: this command needs the '{extra}' extra (Python module '{top}' is not "
        f"installed). Install it with: pip install 'fcnseg[{extra}]'"
    )


def flag_hint(parser: argparse.ArgumentParser, command: str, error: BaseException) -> str:
    """`` (see --a, --b)`` for an error that names options, spelled as ``command``'s flags.

    Library errors name the options at fault by their Python names in an ``options``
    attribute (``mask_values``); the command line knows them as flags (``--mask-values``).
    Empty when the error names no option this command has.
    """
    options = getattr(error, "options", ()) or ()
    flags: dict[str, str] = {}

    def collect(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    collect(child)
            elif action.option_strings:
                flags.setdefault(action.dest, max(action.option_strings, key=len))

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            collect(action.choices[command])
    named = [flags[o] for o in options if o in flags]
    return f" (see {', '.join(named)})" if named else ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    debug = args.verbose or os.environ.get("FCN_DEBUG") == "1"
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(args.command, exc)
        if message is None or debug:
            raise
        print(message, file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        # Library code raises ValueError subclasses (and OSError for files) with messages
        # written for users; a traceback would only bury them.
        if debug:
            raise
        # Library messages speak of the problem; the command line adds its own flags.
        hint = flag_hint(parser, args.command, exc)
        print(f"fcn {args.command}: error: {exc}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
