"""Annotated tasks of a Label Studio export, and the fixed held-out share the gate scores on.

A task counts as annotated when it has an annotation that was not cancelled and holds at least
one region; its newest such annotation is the one used (as ``fcn data import-label-studio``
does). Whether a task is held out depends on its id alone (a hash, not the order tasks arrive
in), so a task held out once is held out in every later run and is never trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Annotated:
    """One annotated task: its id, the annotation used, and the raw task (for the export)."""

    task_id: int
    annotation_id: int
    updated_at: str
    task: dict[str, Any]


def held_out(task_id: int, share: float) -> bool:
    """Whether ``task_id`` belongs to the gate's held-out tasks (deterministic)."""
    digest = hashlib.sha256(f"fcnseg-heldout:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _usable(annotation: Any) -> bool:
    return (
        isinstance(annotation, dict)
        and not annotation.get("was_cancelled")
        and bool(annotation.get("result"))
    )


def annotated_tasks(export: list[dict[str, Any]]) -> list[Annotated]:
    """The export's annotated tasks, by task id.

    Raises:
        ValueError: the export is not a list of tasks with integer ids.
    """
    if not isinstance(export, list):
        raise ValueError("a Label Studio JSON export is a list of tasks")
    found = []
    for task in export:
        if not isinstance(task, dict) or not isinstance(task.get("id"), int):
            raise ValueError("a task of the export has no integer 'id'")
        usable = [a for a in task.get("annotations") or [] if _usable(a)]
        if not usable:
            continue
        latest = max(usable, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0))
        found.append(
            Annotated(task["id"], int(latest.get("id") or 0), str(latest.get("updated_at")), task)
        )
    return sorted(found, key=lambda a: a.task_id)


def split(tasks: list[Annotated], share: float) -> tuple[list[Annotated], list[Annotated]]:
    """``(train, held_out)`` by :func:`held_out`; either may be empty (then no run can start)."""
    train = [t for t in tasks if not held_out(t.task_id, share)]
    gate = [t for t in tasks if held_out(t.task_id, share)]
    return train, gate
