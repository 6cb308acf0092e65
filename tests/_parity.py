"""The parity-table harness shared by ``tests/test_parity_diffusers.py`` and ``tests/test_parity_kdiffusion.py``.

A :class:`Row` is one peer sampler and its sdekit equivalent; ``run(steps, dtype)`` samples both
from the same model, timesteps and noise and returns ``(peer, sdekit)``. The tests assert the
relative difference ``max |sdekit - peer| / max |peer|`` in float64 against ``tol`` (1e-5 for an
equivalent; for rows without one, the measured bound and the reason in ``why``);
``benchmarks/parity.py`` prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

STEPS = (10, 25)


@dataclass(frozen=True)
class Row:
    peer: str
    sdekit: str
    run: Callable[[int, torch.dtype], tuple[torch.Tensor, torch.Tensor]]
    tol: float = 1e-5
    why: str = ""


def rel_diff(ours: torch.Tensor, peer: torch.Tensor) -> float:
    peer, ours = peer.double(), ours.double()
    return float((ours - peer).abs().max() / peer.abs().max())


def measure(row: Row, steps: int, dtype: torch.dtype = torch.float64) -> float:
    peer, ours = row.run(steps, dtype)
    assert torch.isfinite(peer).all() and torch.isfinite(ours).all()
    return rel_diff(ours, peer)


def table(title: str, rows: list[Row]) -> list[str]:
    """Markdown lines: peer, sdekit recipe, max rel diff at 10 and 25 steps (float64 and float32), note."""
    lines = [f"### {title}", "",
             "| peer | sdekit equivalent | 10 steps | 25 steps | 25 steps, float32 | note |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        d10, d25 = (measure(row, s) for s in STEPS)
        f32 = measure(row, STEPS[1], torch.float32)
        note = row.why or "equivalent"
        lines.append(f"| {row.peer} | {row.sdekit} | {d10:.1e} | {d25:.1e} | {f32:.1e} | {note} |")
    return lines + [""]


def check_row(row: Row) -> None:
    """One parity row at every step count of :data:`STEPS` (float64): within its tolerance."""
    for steps in STEPS:
        d = measure(row, steps)
        assert d <= row.tol, f"{row.peer} vs {row.sdekit} at {steps} steps: max rel diff {d:.3g} > {row.tol:g}"


def check_float32(rows: list[Row]) -> None:
    """The equivalents (rows without a ``why``) in float32: float32 round-off, not a method difference."""
    for row in rows:
        if not row.why:
            assert measure(row, 10, torch.float32) < 1e-4, row.peer
