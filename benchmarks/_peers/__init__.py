"""Adapters that drive each peer library (and sdekit) on the exact Gaussian-mixture benchmark problems.

One module per library; each exposes ``LIBRARY``, ``available()``, ``specs(problem, budgets, ...)``
and ``overhead_specs(problem, nfe)``. Peers are optional: a library that does not import is skipped.
"""

from . import hf_diffusers, kdiffusion, ours, scipy_ivp, tdiffeq, tsde

MODULES = {m.LIBRARY: m for m in (ours, kdiffusion, hf_diffusers, tsde, tdiffeq, scipy_ivp)}

__all__ = ["MODULES"]
