"""The solver zoo behind one registry: ``solver=`` takes a name, a class or an instance.

``sdekit.solvers.available()`` lists every solver with its order, NFE per step and
whether it is stochastic. See :mod:`sdekit.solvers.base` for the rules of writing one.
"""

from . import (  # noqa: F401  (registration)
    ancestral,
    ddim,
    deis,
    dpm_2,
    dpmpp_2m,
    dpmpp_2m_sde,
    dpmpp_2s,
    dpmpp_2s_ancestral,
    dpmpp_3m,
    dpmpp_3m_sde,
    dpmpp_sde,
    dpmpp_singlestep,
    edm_heun,
    euler_maruyama,
    langevin,
    lms,
    pc,
    pndm,
    reverse_diffusion,
    runge_kutta,
    unipc,
)
from .base import Corrector, Solver, SolverInfo, available, register, resolve, resolve_corrector, spare

# isort: split
from . import ode_adaptive, sde_adaptive, srk, torchdiffeq_solver  # noqa: F401, E402  (registration)

__all__ = ["Solver", "Corrector", "SolverInfo", "available", "register", "resolve", "resolve_corrector", "spare"]

# isort: split
from .conditioned import Conditioned  # noqa: F401, E402  (a condition wrapped around any solver)
