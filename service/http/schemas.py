"""Response bodies of the JSON routes, for the OpenAPI schema only.

The routes return plain dicts (so a field added to ``LoadedModel.describe`` is never filtered
out); these models document what those dicts hold, and the schemathesis test checks every
answer against them (extra fields are allowed).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.http.reload import Status as ReloadStatus


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    models: list[str]


class FormatInfo(BaseModel):
    name: str
    media_type: str
    suffix: str
    description: str


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    arch: str
    classes: list[str]
    palette: list[list[int]]
    in_channels: int
    size_multiple: int
    version: str
    sha256: str
    default: bool
    formats: list[FormatInfo]


class ModelList(BaseModel):
    models: list[ModelInfo]


# --- the JSON output formats (service.formats.registry.ENCODERS), as /v1/segment answers them -------------


class _Output(BaseModel):
    model_config = ConfigDict(extra="allow")  # the caller's fields: timings, source, arch

    model: str
    height: int
    width: int


class ClassShare(BaseModel):
    index: int
    name: str
    pixels: int
    fraction: float


class SummaryOutput(_Output):
    """``format=json``."""

    pixels: int
    classes: list[ClassShare]


class RleMask(BaseModel):
    size: list[int] = Field(min_length=2, max_length=2, description="[height, width]")
    counts: str = Field(description="COCO compressed run lengths, column-major")


class CocoCategory(BaseModel):
    id: int
    name: str


class CocoAnnotation(BaseModel):
    category_id: int
    category: str
    area: int
    bbox: list[int] = Field(min_length=4, max_length=4, description="[x, y, width, height]")
    segmentation: RleMask


class CocoRleOutput(_Output):
    """``format=coco-rle``."""

    categories: list[CocoCategory]
    annotations: list[CocoAnnotation]


Ring = list[list[float]]  # closed: [[x, y], ..., first point again]


class ClassPolygons(BaseModel):
    index: int
    name: str
    pixels: int
    polygons: list[list[Ring]] = Field(description="per polygon: outer ring, then holes")


class PolygonsOutput(_Output):
    """``format=polygons``."""

    tolerance: float
    classes: list[ClassPolygons]


class FeatureProperties(BaseModel):
    index: int
    name: str
    pixels: int


class MultiPolygon(BaseModel):
    type: Literal["MultiPolygon"]
    coordinates: list[list[Ring]]


class Feature(BaseModel):
    type: Literal["Feature"]
    id: int
    properties: FeatureProperties
    geometry: MultiPolygon


class CrsName(BaseModel):
    name: str = Field(description="urn:ogc:def:crs:EPSG::<code>")


class NamedCrs(BaseModel):
    """The GeoJSON 2008 named CRS, which GDAL/OGR reads."""

    type: Literal["name"]
    properties: CrsName


class GeoJsonOutput(_Output):
    """``format=geojson``: a FeatureCollection (the other top-level fields are foreign members)."""

    type: Literal["FeatureCollection"]
    tolerance: float
    coordinates: Literal["pixel", "lonlat", "map"] = Field(
        description="pixel (no georeference), lonlat (WGS 84, RFC 7946: the default for a "
        "GeoTIFF), map (crs=native: the GeoTIFF's CRS)"
    )
    crs: NamedCrs | None = Field(None, description="crs=native only: the CRS as GDAL reads it")
    crs_warning: str | None = None
    source_crs: str | None = Field(None, description="the GeoTIFF's CRS, EPSG:<code>")
    transform: list[float] | None = None
    features: list[Feature]


JSON_OUTPUTS: dict[str, type[BaseModel]] = {
    "json": SummaryOutput,
    "coco-rle": CocoRleOutput,
    "polygons": PolygonsOutput,
    "geojson": GeoJsonOutput,
}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with every ``$ref`` replaced by its definition (no recursion
    here), so that it can sit inside an OpenAPI response without components."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def output_content() -> dict[str, Any]:
    """The ``content`` of ``/v1/segment``'s 200: one entry per media type of the format table,
    with the JSON formats' schemas."""
    from service.formats.registry import ENCODERS

    content: dict[str, Any] = {}
    for encoder in ENCODERS.values():
        if encoder.name in JSON_OUTPUTS:
            schema = inline_schema(JSON_OUTPUTS[encoder.name])
            entry = content.setdefault(encoder.media_type, {"schema": {"anyOf": []}})
            entry["schema"]["anyOf"].append(schema)
        else:
            content[encoder.media_type] = {"schema": {"type": "string", "format": "binary"}}
    return content


class ReloadOutcome(BaseModel):
    name: str
    status: ReloadStatus
    version: str | None
    previous_version: str | None
    error: str | None


class ReloadReport(BaseModel):
    ok: bool
    models: list[ReloadOutcome]
