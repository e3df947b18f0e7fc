"""Optimizers (optax ``GradientTransformation``\\ s) not provided by optax itself.

- :func:`adamp`, :func:`scale_by_adamp`: AdamP (Heo et al., ICLR 2021), matching the PyTorch
  package ``adamp==0.3.0`` step for step.
"""

from jad.optim.adamp import ScaleByAdamPState, adamp, scale_by_adamp

__all__ = ["ScaleByAdamPState", "adamp", "scale_by_adamp"]
