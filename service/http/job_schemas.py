"""The job API's JSON: the request body of ``POST /v1/jobs`` and the job it answers with.

:func:`job_view` turns a stored status (:mod:`service.jobs.store`) into the answer, adding the
links and each output's href and media type.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.jobs.store import STATUSES

# Output suffix -> media type (vectors: the types their formats registered).
MEDIA_TYPES = {
    ".tif": "image/tiff",
    ".gpkg": "application/geopackage+sqlite3",
    ".fgb": "application/flatgeobuf",
    ".geojson": "application/geo+json",
}
VectorDriver = Literal["GPKG", "FlatGeobuf", "GeoJSON"]
VectorCrs = Literal["wgs84", "native"]
MAX_TOLERANCE_M = 1e6


class VectorSpec(BaseModel):
    """Polygons of the finished mask (as ``fcn predict --vectors``)."""

    model_config = ConfigDict(extra="forbid")

    driver: VectorDriver = Field("GPKG", description="GeoPackage, FlatGeobuf or GeoJSON")
    tolerance_m: float = Field(
        0.0, ge=0.0, le=MAX_TOLERANCE_M, description="simplification in map units (0: exact)"
    )
    crs: VectorCrs | None = Field(
        None, description="wgs84 or native; default: wgs84 for GeoJSON (RFC 7946), else native"
    )


class JobSpec(BaseModel):
    """``POST /v1/jobs`` with ``Content-Type: application/json``."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1, max_length=1024, description="the raster, relative to FCN_JOBS_DIR"
    )
    model: str | None = Field(None, max_length=64, description="a loaded model's name")
    bands: list[Annotated[int, Field(ge=1, le=99)]] | None = Field(
        None, min_length=1, max_length=8, description="1-based bands in the model's order"
    )
    rescale: tuple[float, float] | None = Field(
        None, description="[MIN, MAX] raw values mapped to 0..255 (default: the bit-depth rule)"
    )
    probabilities: bool = Field(False, description="also write the per-class probability COG")
    vectors: VectorSpec | None = Field(None, description="also write polygons")


class JobProgress(BaseModel):
    tiles_done: int
    tiles: int
    km2_done: float | None = None
    km2: float | None = None


class JobOutput(BaseModel):
    name: str
    media_type: str
    href: str


class Job(BaseModel):
    """A job as ``GET /v1/jobs/{id}`` answers it."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: Literal[STATUSES]
    source: str
    model: str
    created: float
    started: float | None = None
    finished: float | None = None
    progress: JobProgress | None = None
    error: str | None = None
    outputs: list[JobOutput]
    links: dict[str, str]


class JobList(BaseModel):
    jobs: list[Job]


def job_view(status: dict) -> dict:
    """The answer for a stored status: outputs with hrefs and media types, and links."""
    base = f"/v1/jobs/{status['id']}"
    outputs = [
        {
            "name": name,
            "media_type": MEDIA_TYPES.get(PurePath(name).suffix, "application/octet-stream"),
            "href": f"{base}/outputs/{name}",
        }
        for name in status.get("outputs", [])
    ]
    return {**status, "outputs": outputs, "links": {"self": base}}


def inline_schema(model: type[BaseModel]) -> dict:
    """``model``'s JSON schema with its ``$defs`` inlined (for an ``openapi_extra`` body)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.split("/")[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return inline(schema)
