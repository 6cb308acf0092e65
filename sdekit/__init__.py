"""sdekit: sample score-based generative models by solving their reverse-time SDE or PF-ODE.

Quick start::

    import torch, sdekit
    sde = sdekit.VPSDE()
    mix = sdekit.testing.GaussianMixture.random(dim=2)
    x = sdekit.sample(mix.score_fn(sde), sde, "ode_heun", shape=(1000, 2), nfe=50,
                      generator=torch.Generator().manual_seed(0))
"""

from . import distributed, errors, grids, guidance, kernels, metrics, noise, score, seeding, solvers, stepping, testing
from .integrate import (
    MaxStepsError,
    NonFiniteError,
    SamplingError,
    Solution,
    StepInfo,
    StepSizeUnderflowError,
    integrate,
)
from .likelihood import LikelihoodResult, decode, encode, likelihood
from .process import DriftDiffusion, ReverseProcess, ScoreError
from .sampling import sample, solve, steps_for_nfe
from .sde import EDMSDE, SDE, VESDE, VPSDE, AlphaSigmaSDE, CosineSDE, DiscreteVPSDE, FlowSDE, SubVPSDE

__version__ = "0.1.0"

__all__ = [
    "sample", "solve", "integrate", "steps_for_nfe", "Solution", "StepInfo",
    "SDE", "VPSDE", "SubVPSDE", "VESDE", "AlphaSigmaSDE", "CosineSDE", "EDMSDE", "DiscreteVPSDE", "FlowSDE",
    "ReverseProcess", "DriftDiffusion", "ScoreError", "SamplingError", "NonFiniteError", "MaxStepsError",
    "StepSizeUnderflowError",
    "likelihood", "encode", "decode", "LikelihoodResult",
    "grids", "guidance", "kernels", "metrics", "noise", "score", "solvers", "testing", "seeding", "distributed",
    "errors", "stepping", "__version__",
]
