"""Label Studio's side of pre-annotation: its labelling config, its result JSON, its exports.

* :class:`LabelConfig` reads the project's XML config: the ``BrushLabels`` / ``PolygonLabels``
  controls, the labels each offers and the ``Image`` each points at (and so the task field that
  holds the image URL).
* :func:`match_labels` pairs the model's class names with a control's labels by name (exactly,
  then ignoring case), and says which names found no partner on either side.
* :func:`prediction` turns one segmented image into a task's prediction: one ``brushlabels``
  region per class present (Label Studio's brush RLE, :mod:`service.labeling.brush_rle`) and/or
  one ``polygonlabels`` region per polygon (points in percent of the image size), each with the
  mean confidence of its pixels as ``score``.
* :func:`annotation_mask` does the reverse for ``fcn data import-label-studio``: the class-index
  mask of one annotation in an export (brush regions and polygons).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.formats.polygons import label_polygons
from service.formats.shapes import DEFAULT_TOLERANCE, present_classes
from service.labeling import brush_rle
from service.labeling.uncertainty import task_score

BRUSH = "brushlabels"
POLYGON = "polygonlabels"
# Config tag (lower case) -> the result type it produces.
CONTROL_TAGS = {"brushlabels": BRUSH, "polygonlabels": POLYGON}


class LabelStudioError(ValueError):
    """A problem with what Label Studio sent (config, task, export); the message says which."""


@dataclass(frozen=True)
class Control:
    """One labelling control: ``kind`` is the result type it stores (``brushlabels`` or
    ``polygonlabels``), ``name`` its ``from_name``, ``to_name`` the image it labels and
    ``image_key`` the task data field holding that image's URL."""

    kind: str
    name: str
    to_name: str
    image_key: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class LabelConfig:
    controls: tuple[Control, ...]

    @classmethod
    def parse(cls, xml: str) -> LabelConfig:
        """Read the segmentation controls of a labelling config.

        Raises:
            LabelStudioError: not XML, or no BrushLabels/PolygonLabels control on an Image.
        """
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as exc:
            raise LabelStudioError(f"the labelling config is not valid XML: {exc}") from None
        images = {
            el.get("name"): el.get("value", "")
            for el in root.iter()
            if el.tag.lower() == "image" and el.get("name")
        }
        controls = []
        for el in root.iter():
            kind = CONTROL_TAGS.get(el.tag.lower())
            if kind is None:
                continue
            to_name = (el.get("toName") or "").split(",")[0]
            value = images.get(to_name)
            if not el.get("name") or value is None:
                continue
            labels = tuple(
                child.get("value", "")
                for child in el
                if child.tag.lower() == "label" and child.get("value")
            )
            key = value[1:] if value.startswith("$") else value
            controls.append(Control(kind, el.get("name", ""), to_name, key, labels))
        if not controls:
            raise LabelStudioError(
                "the labelling config has no BrushLabels or PolygonLabels control on an Image; "
                'add e.g. <BrushLabels name="tag" toName="image"> with a <Label> per class'
            )
        return cls(tuple(controls))


@dataclass(frozen=True)
class LabelMatch:
    """Model classes paired with a control's labels. ``labels[i]`` is class ``i``'s label, or
    None when the control has none for it."""

    labels: tuple[str | None, ...]
    model_only: tuple[str, ...] = ()
    config_only: tuple[str, ...] = ()

    @property
    def matched(self) -> int:
        return sum(label is not None for label in self.labels)

    def report(self) -> str:
        """One line naming what did not match ('' when everything did)."""
        parts = []
        if self.model_only:
            parts.append(
                "model classes without a label in the project (not pre-annotated): "
                + ", ".join(self.model_only)
            )
        if self.config_only:
            parts.append(
                "project labels the model does not know (never predicted): "
                + ", ".join(self.config_only)
            )
        return "; ".join(parts)


def match_labels(classes: Sequence[str], labels: Sequence[str]) -> LabelMatch:
    """Pair classes with labels by name: the same name, else the same name ignoring case."""
    exact = {label: label for label in labels}
    folded: dict[str, str] = {}
    for label in labels:
        folded.setdefault(label.casefold(), label)
    paired: list[str | None] = []
    for name in classes:
        paired.append(exact.get(name) or folded.get(name.casefold()))
    used = {label for label in paired if label is not None}
    return LabelMatch(
        tuple(paired),
        tuple(name for name, label in zip(classes, paired, strict=True) if label is None),
        tuple(label for label in labels if label not in used),
    )


@dataclass
class Region:
    """What :func:`prediction` needs to know about one segmented image."""

    mask: np.ndarray  # (H, W) class indices
    confidence: np.ndarray | None = None  # (H, W) top-class probability
    tolerance: float = DEFAULT_TOLERANCE


def _score(confidence: np.ndarray | None, where: np.ndarray | None = None) -> float | None:
    if confidence is None:
        return None
    values = confidence if where is None else confidence[where]
    return round(float(values.mean()), 4) if values.size else None


def _region(control: Control, kind: str, value: dict, width: int, height: int) -> dict:
    return {
        "id": uuid.uuid4().hex[:10],
        "from_name": control.name,
        "to_name": control.to_name,
        "type": kind,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": value,
    }


def _labelled_present(mask: np.ndarray, match: LabelMatch) -> list[tuple[int, str]]:
    """``(class index, label)`` of each class in the mask that has a label in the project."""
    return [
        (index, label)
        for index, label, _ in present_classes(mask, match.labels)
        if index < len(match.labels) and label is not None
    ]


def brush_results(control: Control, match: LabelMatch, region: Region) -> list[dict]:
    """One ``brushlabels`` region per class present that has a label."""
    mask = region.mask
    height, width = mask.shape
    out = []
    for index, label in _labelled_present(mask, match):
        painted = mask == index
        value = {"format": "rle", "rle": brush_rle.encode(painted), BRUSH: [label]}
        result = _region(control, BRUSH, value, width, height)
        score = _score(region.confidence, painted)
        if score is not None:
            result["score"] = score
        out.append(result)
    return out


def polygon_results(control: Control, match: LabelMatch, region: Region) -> list[dict]:
    """One ``polygonlabels`` region per polygon of each class that has a label: its outer ring,
    in percent of the image size. Label Studio polygons have no holes, so holes are left out
    (the brush results keep them)."""
    mask = region.mask
    height, width = mask.shape
    wanted = [index for index, _ in _labelled_present(mask, match)]
    out = []
    for index, rings in label_polygons(mask, wanted, region.tolerance):
        label = match.labels[index]
        for rings_of_polygon in rings.polygons():
            outer = rings_of_polygon[0][:-1]  # closed ring: drop the repeated first point
            points = [
                [round(100.0 * x / width, 4), round(100.0 * y / height, 4)]
                for x, y in outer.tolist()
            ]
            value = {"points": points, "closed": True, POLYGON: [label]}
            out.append(_region(control, POLYGON, value, width, height))
    return out


def prediction(
    controls: Sequence[tuple[Control, LabelMatch]], region: Region, model_version: str
) -> dict[str, Any]:
    """A task's prediction: ``{"result": [...], "score", "model_version"}``; ``score`` is the
    mean top-class probability over the image's interior pixels
    (:func:`service.labeling.uncertainty.task_score`: low scores first is a good labelling
    order)."""
    results: list[dict] = []
    for control, match in controls:
        build = brush_results if control.kind == BRUSH else polygon_results
        results.extend(build(control, match, region))
    score = task_score(region.mask, region.confidence)
    return {"result": results, "score": score, "model_version": model_version}


# --- exports -> masks --------------------------------------------------------------------


def _polygon_mask(points: list, width: int, height: int) -> np.ndarray:
    """Pixels whose centre lies inside the polygon (points in percent of the image size): a
    scanline fill, each row of pixel centres filled between pairs of side crossings."""
    try:
        xy = np.array([[float(x) * width / 100.0, float(y) * height / 100.0] for x, y in points])
    except (TypeError, ValueError):
        raise LabelStudioError("polygon points must be [x, y] pairs of numbers") from None
    mask = np.zeros((height, width), bool)
    if len(xy) < 3:
        return mask
    a, b = xy, np.roll(xy, -1, axis=0)
    for row in range(max(0, int(xy[:, 1].min())), min(height, int(np.ceil(xy[:, 1].max())))):
        centre = row + 0.5
        spans = (np.minimum(a[:, 1], b[:, 1]) <= centre) & (centre < np.maximum(a[:, 1], b[:, 1]))
        p, q = a[spans], b[spans]
        xs = np.sort(p[:, 0] + (centre - p[:, 1]) * (q[:, 0] - p[:, 0]) / (q[:, 1] - p[:, 1]))
        for left, right in zip(xs[0::2], xs[1::2], strict=False):
            # columns whose centre c + 0.5 lies in [left, right)
            mask[row, max(0, int(np.ceil(left - 0.5))) : max(0, int(np.ceil(right - 0.5)))] = True
    return mask


def annotation_mask(
    results: Sequence[Mapping[str, Any]],
    class_index: Mapping[str, int],
    fill: int,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, set[str]]:
    """The class-index mask of one annotation's results (brush and polygon regions; later
    regions paint over earlier ones, as in Label Studio's editor).

    Args:
        results: the annotation's ``result`` list.
        class_index: label name -> class index.
        fill: the value of pixels no region covers.
        size: ``(width, height)`` when known; otherwise read from the regions.

    Returns:
        ``(mask, unknown)``: the mask (uint8) and the labels not in ``class_index``.

    Raises:
        LabelStudioError: a malformed region, or regions of different image sizes.
    """
    mask = None
    unknown: set[str] = set()
    for result in results:
        kind = str(result.get("type", "")).lower()
        if kind not in (BRUSH, POLYGON):
            continue
        value = result.get("value") or {}
        try:
            width, height = int(result["original_width"]), int(result["original_height"])
        except (KeyError, TypeError, ValueError):
            raise LabelStudioError(f"a {kind} region has no original_width/height") from None
        if size is None:
            size = (width, height)
        if (width, height) != size:
            raise LabelStudioError(
                f"regions of one image disagree on its size: {width}x{height} vs "
                f"{size[0]}x{size[1]}"
            )
        if mask is None:
            mask = np.full((height, width), fill, np.uint8)
        names = value.get(kind) or []
        if not names:
            continue
        label = str(names[0])
        if label not in class_index:
            unknown.add(label)
            continue
        if kind == BRUSH:
            if value.get("format", "rle") != "rle" or "rle" not in value:
                raise LabelStudioError("a brush region without an 'rle' value")
            try:
                painted = brush_rle.decode(value["rle"], width, height)
            except brush_rle.BrushRleError as exc:
                raise LabelStudioError(f"brush region of {label!r}: {exc}") from None
        else:
            painted = _polygon_mask(value.get("points") or [], width, height)
        mask[painted] = class_index[label]
    if mask is None:
        if size is None:
            raise LabelStudioError("the annotation has no brush or polygon region")
        mask = np.full((size[1], size[0]), fill, np.uint8)
    return mask, unknown
