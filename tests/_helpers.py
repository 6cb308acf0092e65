"""Small helpers shared by several test modules."""

from __future__ import annotations


class Counting:
    """A score function wrapper that counts its calls (``.calls``)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)
