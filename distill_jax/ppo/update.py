"""One PPO iteration as a pure function: rollout → normaliser → GAE → SGD epochs.

``train_step(state, *, env, nets, config) -> (state, metrics)`` is the unit
that the teacher phase scans (several iterations per compiled call), vmaps
(independent seeds, sweep members) and shards (environments over devices). Its
two halves, :func:`collect` and :func:`ppo_epochs`, are public so that they can
be timed or reused on their own.

``config`` supplies only the static settings (sizes, switches); the float
coefficients (learning rate, clipping, discounting, loss weights) are read from
``state.hparams`` (:mod:`distill_jax.hyperparams`), so a changed coefficient
runs the same compiled program.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from distill_jax import distributions, normalization
from distill_jax.config import PPOConfig
from distill_jax.envs.base import Env, EnvState
from distill_jax.hyperparams import Hyperparams, coefficients
from distill_jax.loop import finiteness
from distill_jax.networks import TeacherNetworks
from distill_jax.policy import make_policy
from distill_jax.ppo.gae import compute_gae
from distill_jax.ppo.loss import PPOBatch, ppo_loss
from distill_jax.rollout import Transition, episode_metrics, flatten_time, unroll
from distill_jax.sgd import LossFn, make_optimizer, sgd_epochs


@struct.dataclass
class TeacherState:
    """Everything a PPO teacher run carries between iterations (one seed).

    Attributes:
      params: ``{"actor": ..., "critic": ...}``.
      opt_state: optax state of ``params``.
      obs_stats: running per-field normaliser statistics (all fields).
      env_state: batched env state ``[num_envs]``.
      key: PRNG key.
      update_step: iterations done, int32 scalar. Env steps so far are ``update_step *
        config.batch_size``, counted in Python ints by the loop and the checkpoints: an int32
        env-step counter here would wrap after 2**31 steps (about an hour at 580k env-steps/s).
      hparams: the ``PPOConfig``'s traced coefficients as float32 scalars
        (:func:`distill_jax.hyperparams.coefficients`), e.g. ``hparams["clip_eps"]``.
    """

    params: dict[str, Any]
    opt_state: optax.OptState
    obs_stats: normalization.RunningStats
    env_state: EnvState
    key: jax.Array
    update_step: jax.Array
    hparams: Hyperparams


def init_teacher(key: jax.Array, env: Env, nets: TeacherNetworks, config: PPOConfig,
                 hparams: Hyperparams | None = None) -> TeacherState:
    """Initial state for one seed. ``env`` is batched (``[num_envs]`` states); ``hparams``
    defaults to ``config``'s coefficients (a sweep member passes its own)."""
    hparams = coefficients(config) if hparams is None else hparams
    key, actor_key, critic_key, env_key = jax.random.split(key, 4)
    env_state = env.reset(env_key)
    one_obs = jax.tree.map(lambda x: x[0], env_state.obs)
    params = {"actor": nets.actor.init(actor_key, one_obs), "critic": nets.critic.init(critic_key, one_obs)}
    return TeacherState(
        params=params,
        opt_state=make_optimizer(hparams["learning_rate"], hparams["max_grad_norm"], config.anneal_steps).init(params),
        obs_stats=normalization.init_stats(one_obs),
        env_state=env_state,
        key=key,
        update_step=jnp.zeros((), jnp.int32),
        hparams=hparams,
    )


def _values(nets: TeacherNetworks, params, stats, obs) -> jax.Array:
    return nets.critic.apply(params["critic"], normalization.normalize(stats, obs))


class Collected(NamedTuple):
    """What one PPO iteration's collection half produces (see :func:`collect`)."""

    env_state: EnvState  # [num_envs] batched env state after the rollout
    obs_stats: Any  # observation normaliser updated with this rollout (unchanged if disabled)
    batch: PPOBatch  # [unroll_length * num_envs] flattened, observations normalised
    transitions: Transition  # [unroll_length, num_envs] the raw rollout, for metrics and guards


def collect(
    state: TeacherState, key: jax.Array, *, env: Env, nets: TeacherNetworks, config: PPOConfig
) -> Collected:
    """The collection half of a PPO iteration: rollout -> normaliser -> GAE -> flat batch.

    Rewards are multiplied by ``state.hparams["reward_scale"]`` before GAE; advantages
    bootstrap on truncation but not on termination.
    """
    hp = state.hparams
    policy = make_policy(nets.actor.apply, state.params["actor"], state.obs_stats)
    env_state, _, transitions = unroll(env, state.env_state, policy, None, key, config.unroll_length)

    obs_stats = state.obs_stats
    if config.normalize_observations:
        obs_stats = normalization.update_stats(obs_stats, transitions.obs)

    values = _values(nets, state.params, obs_stats, transitions.obs)
    next_values = _values(nets, state.params, obs_stats, transitions.next_obs)
    advantages, returns = compute_gae(
        transitions.reward * hp["reward_scale"],
        values,
        next_values,
        transitions.terminated,
        transitions.truncated,
        hp["gamma"],
        hp["gae_lambda"],
    )
    batch = flatten_time(
        PPOBatch(
            obs=normalization.normalize(obs_stats, transitions.obs),
            raw_actions=transitions.policy.raw_action,
            old_log_probs=transitions.policy.log_prob,
            advantages=advantages,
            returns=returns,
            old_values=values,
        )
    )
    return Collected(env_state, obs_stats, batch, transitions)


def make_ppo_loss(nets: TeacherNetworks, config: PPOConfig, hparams: Hyperparams) -> LossFn:
    """The clipped-PPO loss ``(params, minibatch) -> (loss, metrics)``: coefficients from ``hparams``,
    the static switches (advantage normalisation, entropy kind) from ``config``."""

    def loss_fn(params, minibatch):
        return ppo_loss(
            params,
            minibatch,
            apply_actor=nets.actor.apply,
            apply_critic=nets.critic.apply,
            clip_eps=hparams["clip_eps"],
            vf_coef=hparams["vf_coef"],
            ent_coef=hparams["ent_coef"],
            normalize_advantages=config.normalize_advantages,
            value_clip=hparams["value_clip"],
            bound_coef=hparams["bound_coef"],
            action_bound=hparams["action_bound"],
            entropy_kind=config.entropy,
        )

    return loss_fn


def ppo_epochs(
    params: Any, opt_state: Any, batch: PPOBatch, key: jax.Array, *, nets: TeacherNetworks, config: PPOConfig,
    hparams: Hyperparams,
) -> tuple[Any, Any, dict[str, jax.Array]]:
    """The SGD half of a PPO iteration: ``num_epochs`` x ``num_minibatches`` clipped-PPO steps.

    Returns ``(params, opt_state, metrics)`` (metrics averaged over minibatches).
    """
    return sgd_epochs(
        params,
        opt_state,
        batch,
        key,
        loss_fn=make_ppo_loss(nets, config, hparams),
        optimizer=make_optimizer(hparams["learning_rate"], hparams["max_grad_norm"], config.anneal_steps),
        num_epochs=config.num_epochs,
        num_minibatches=config.num_minibatches,
    )


def train_step(
    state: TeacherState, *, env: Env, nets: TeacherNetworks, config: PPOConfig
) -> tuple[TeacherState, dict[str, Any]]:
    """One PPO iteration for one seed (vmap over seeds, scan over iterations):
    :func:`collect` then :func:`ppo_epochs`.

    Returns ``(state, metrics)``; ``metrics["finite"]`` maps each checked
    field (observations, reward, loss, parameters) to a bool.
    """
    key, rollout_key, sgd_key = jax.random.split(state.key, 3)
    env_state, obs_stats, batch, transitions = collect(state, rollout_key, env=env, nets=nets, config=config)
    params, opt_state, sgd_metrics = ppo_epochs(state.params, state.opt_state, batch, sgd_key, nets=nets,
                                                config=config, hparams=state.hparams)
    finite = {
        **finiteness(transitions.obs, "obs"),
        "reward": jnp.all(jnp.isfinite(transitions.reward)),
        "loss": jnp.isfinite(sgd_metrics["loss"]),
        **finiteness(params, "params"),
    }
    new_state = state.replace(
        params=params,
        opt_state=opt_state,
        obs_stats=obs_stats,
        env_state=env_state,
        key=key,
        update_step=state.update_step + 1,
    )
    metrics = {
        **sgd_metrics,
        **episode_metrics(transitions),
        "reward_mean": jnp.mean(transitions.reward),
        # Share of steps distillation's default saturated_actions rule would mask:
        # a teacher that lives at the action bounds leaves the student few targets.
        "policy/saturated_steps": jnp.mean(distributions.saturated(transitions.policy.loc)),
        **{f"env/{k}": jnp.mean(v) for k, v in transitions.metrics.items()},
        "finite": finite,
    }
    return new_state, metrics
