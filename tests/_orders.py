"""Helpers for measuring convergence orders."""

import torch


def slope(steps, errors):
    """Least-squares slope of log(error) against log(step size 1/steps)."""
    lh = torch.log(1.0 / torch.tensor(steps, dtype=torch.float64))
    le = torch.log(torch.tensor(errors, dtype=torch.float64))
    a = torch.stack([lh, torch.ones_like(lh)], 1)
    return float(torch.linalg.lstsq(a, le[:, None]).solution[0])
