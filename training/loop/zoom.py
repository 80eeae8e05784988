"""How much random zoom a run gets: none for a short run, the whole range for a long one.

Zoom (``AugmentConfig.scale_range``, 0.5-2.0 by default) teaches a model every scale of its
objects, which pays over thousands of steps. A run of a few hundred steps (15 minutes on an
AVX2 CPU) is still learning the objects at the scale it is scored at, and zoom costs it: short
runs on the Dubai aerial set scored lower with zoom than without (docs/benchmarks.md, "Zoom and
the run's length"; bench/results/recipe_screen_scale.json). So the range
the sampler hands the transform grows with the run's planned length: none below
``NO_ZOOM_BELOW`` steps, all of it from ``FULL_ZOOM_FROM``, geometrically in between
(``lo ** f``, ``hi ** f``). A time budget's length is known once its speed is measured; until
then (the first epoch) the run counts as short. A range given on the command line
(``zoom_by_length`` off) is used as given.
"""

from __future__ import annotations

NO_ZOOM_BELOW = 1000  # planned optimiser steps
FULL_ZOOM_FROM = 3000


def zoom_fraction(planned_steps: int | None) -> float:
    """0 (no zoom) .. 1 (the whole range) for a run planned to take ``planned_steps``."""
    if planned_steps is None:
        return 0.0
    span = FULL_ZOOM_FROM - NO_ZOOM_BELOW
    return min(1.0, max(0.0, (planned_steps - NO_ZOOM_BELOW) / span))


def zoom_range(scale_range: tuple[float, float], planned_steps: int | None) -> tuple[float, float]:
    """``scale_range`` narrowed towards 1 for a run of ``planned_steps`` steps."""
    fraction = zoom_fraction(planned_steps)
    low, high = scale_range
    return (low**fraction, high**fraction)
