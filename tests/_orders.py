"""Helpers for measuring convergence orders."""

from sdekit.testing import convergence_slope as slope  # noqa: F401  (the one slope helper)
