"""distill_jax: privileged teacher -> deployable student distillation on MJX/Brax.

Importing the package is cheap: submodules (``distill_jax.schema``,
``distill_jax.envs``, ``distill_jax.rollout``, ``distill_jax.ppo``,
``distill_jax.distill`` ...) are imported on first use.
"""

from distill_jax.schema import ObservationSchema

__version__ = "0.1.0"
__all__ = ["ObservationSchema", "__version__"]
