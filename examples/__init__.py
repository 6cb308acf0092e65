"""Thin examples built on sdekit: score networks, the denoising score-matching loss, a training loop.

The library never imports this package. Run the scripts from the repository root, e.g.
``python -m examples.toy2d`` or ``python examples/digits.py``.
"""
