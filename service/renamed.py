"""Names that changed: the old command-line flags and environment variables, still accepted for
one release with a warning that names the new one (CHANGELOG.md lists them).

The commands (:mod:`service.commands`) and the HTTP settings (:mod:`service.http.settings`)
both read these tables, so an old name warns the same way wherever it is used.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from collections.abc import Mapping

logger = logging.getLogger("fcnseg")

# fcn predict: old flag -> the EngineConfig field it sets now (the flag is --field-name).
PREDICT_FLAGS: dict[str, str] = {
    "--threads": "intra_op_threads",
    "--inter-threads": "inter_op_threads",
    "--infer-threads": "concurrency",
}
# fcn serve: old flag -> the Settings field it sets now.
SERVE_FLAGS: dict[str, str] = {"--max-concurrency": "concurrency"}
# Environment: old variable -> new variable.
ENV_VARS: dict[str, str] = {"FCN_MAX_CONCURRENCY": "FCN_CONCURRENCY"}


def warn_renamed(old: str, new: str) -> None:
    """Say that ``old`` is deprecated in favour of ``new``: a DeprecationWarning for code and
    tests, and a logged warning for people (Python hides DeprecationWarning by default)."""
    message = f"{old} is deprecated and will be removed in the next release; use {new}"
    warnings.warn(message, DeprecationWarning, stacklevel=3)
    logger.warning(message)


def flag(name: str) -> str:
    """The command-line flag of a field: ``intra_op_threads`` -> ``--intra-op-threads``."""
    return "--" + name.replace("_", "-")


class RenamedFlag(argparse.Action):
    """An old flag: stores into the new flag's field, warning once per use."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warn_renamed(option_string or self.option_strings[0], flag(self.dest))
        setattr(namespace, self.dest, values)


def add_renamed_flags(
    parser: argparse.ArgumentParser, renamed: Mapping[str, str], **kwargs
) -> None:
    """Add each old flag of ``renamed`` (old flag -> field), hidden from ``--help``.

    ``kwargs`` maps a field to the argparse keywords of its new flag (type, metavar), so the old
    flag parses its value the same way.
    """
    for old, field in renamed.items():
        options = {k: v for k, v in kwargs.get(field, {}).items() if k in ("type", "metavar")}
        parser.add_argument(old, dest=field, action=RenamedFlag, help=argparse.SUPPRESS, **options)


def warn_renamed_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """Warn for each old environment variable that is set; return their names."""
    environ = os.environ if environ is None else environ
    found = [old for old in ENV_VARS if old in environ]
    for old in found:
        warn_renamed(old, ENV_VARS[old])
    return found
