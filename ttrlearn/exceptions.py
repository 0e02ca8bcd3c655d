"""Exceptions and warnings raised by ttrlearn."""

from __future__ import annotations

__all__ = ["DivergenceWarning", "NonFiniteStateError"]


class NonFiniteStateError(FloatingPointError, ValueError):
    """An update would have made the memory's state non-finite.

    The update is rolled back before this is raised: every learned attribute
    and every prediction is exactly what it was before the call.
    """


class DivergenceWarning(RuntimeWarning):
    """A step size is outside the range in which the recurrence is stable.

    For the explicit delta rule this is ``learning_rate * ||k||^2 >= 2``: the
    memory may grow without bound along ``k``.
    """
