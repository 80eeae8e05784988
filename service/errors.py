"""Typed exceptions raised by the serving engine, the image decoder and the batch runner.

Every class subclasses ``ValueError`` and carries a message written for the person who sent
the image or the model, so callers (the ``fcn`` CLI, the HTTP app) can show ``str(exc)``
directly and pick a status from the type: unsupported format, corrupt input, too large, or a
model problem.
"""

from __future__ import annotations


class ImageError(ValueError):
    """Base class for every problem with an input image (what the user sent is at fault)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedFormatError(ImageError):
    """The bytes are not an image in one of the allowed formats (or use an unusable mode)."""


class CorruptImageError(ImageError):
    """The file claims an allowed format but is empty, truncated or otherwise undecodable."""


class ImageTooLargeError(ImageError):
    """The image's header declares more pixels (or a longer side) than the configured limit."""


class ModelError(ValueError):
    """Base class for problems with an ONNX model file (the operator's side is at fault)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelLoadError(ModelError):
    """The model file is missing, unreadable, or ONNX Runtime cannot build a session from it."""


class MetadataError(ModelError):
    """A ``metadata_props`` entry is missing or invalid; ``key`` names the entry."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"model metadata {key!r}: {message}")
        self.key = key


class GeoInputError(ImageError):
    """A georeferenced raster cannot be segmented as asked (bands, bit depth, options)."""


class GeoDependencyError(ImageError):
    """A georeferenced raster needs the ``geo`` extra (rasterio), which is not installed."""


class JobError(ValueError):
    """A request to the job API that cannot be served as asked (:mod:`service.jobs`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownJobError(JobError):
    """No job (or no output of a job) by that name."""


class JobPathError(JobError):
    """A job's ``path`` leaves the jobs folder (``..``, an absolute path, a symlink out)."""


class JobsDisabledError(JobError):
    """The job API is off: no jobs folder is configured."""
