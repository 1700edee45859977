"""Proximal policy optimisation: advantage estimation and the clipped-surrogate loss."""

from distill_jax.ppo.gae import compute_gae
from distill_jax.ppo.loss import ActorCriticParams, PPOBatch, ppo_loss

__all__ = ["ActorCriticParams", "PPOBatch", "compute_gae", "ppo_loss"]
