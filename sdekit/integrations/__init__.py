"""sdekit inside the tools people already use.

- :mod:`sdekit.integrations.diffusers`: :class:`~sdekit.integrations.diffusers.SdekitScheduler`, a
  diffusers scheduler that runs any single-evaluation sdekit solver inside an unmodified
  ``DiffusionPipeline``.
- :mod:`sdekit.integrations.k_diffusion`: samplers with k-diffusion's signature
  ``(model, x, sigmas, extra_args=None, callback=None, disable=None)``.

Import the submodule you need; importing :mod:`sdekit` (or this package) imports neither diffusers
nor k-diffusion.
"""
