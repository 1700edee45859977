"""One distillation iteration as a pure function: collect → mask → SGD epochs.

``distill_step(state, teacher, *, env, teacher_actor, student, config) ->
(state, metrics)``, made of two halves that profile separately: :func:`collect`
(rollout, normaliser, mask) and :func:`distill_epochs` (SGD). The teacher
arrives as an argument (:class:`FrozenTeacher`) and never enters the
optimiser: only ``state.params`` (the student's) receive gradients, and the
losses stop gradients through the teacher's outputs.

Collection uses the shared :func:`~distill_jax.rollout.unroll`. At every step
both policies see the *same* observation dict: the teacher reads its
privileged view, the student only its deployable fields; the behaviour policy
(teacher, student or a β-mixture) picks the action sent to the env; the
teacher's distribution is recorded as the target for every visited state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from distill_jax import normalization
from distill_jax.config import DistillConfig
from distill_jax.distill import losses, masks
from distill_jax.distill.student import Student
from distill_jax.envs.base import Env, EnvState
from distill_jax.loop import finiteness
from distill_jax.networks import make_critic
from distill_jax.policy import action_distribution, policy_step
from distill_jax.ppo.gae import compute_gae
from distill_jax.ppo.loss import PPOBatch, ppo_loss
from distill_jax.rollout import PolicyStep, Transition, episode_metrics, unroll
from distill_jax.sgd import make_optimizer, sgd_epochs
from distill_jax.treeops import select_rows


class FrozenTeacher(NamedTuple):
    """A trained teacher actor's parameters and its (fixed) normaliser statistics."""

    params: Any
    obs_stats: normalization.RunningStats | None


@struct.dataclass
class StudentState:
    """Everything a distillation run carries between iterations (one seed).

    Attributes:
      params: student actor params (the only optimised parameters).
      opt_state: optax state of ``params``.
      obs_stats: running normaliser statistics of the student's fields.
      env_state: batched env state ``[num_envs]``.
      carry: recurrent student memory ``[num_envs, H]`` (``None`` for MLPs).
      key: PRNG key.
      update_step: iterations done, int32 scalar (env steps: ``update_step * config.batch_size``,
        counted in Python ints, as for the teacher's state).
      critic: the λ·PPO term's critic params (``None`` for pure distillation);
        when present ``opt_state`` covers ``{"student": params, "critic": critic}``.
    """

    params: Any
    opt_state: optax.OptState
    obs_stats: normalization.RunningStats
    env_state: EnvState
    carry: Any
    key: jax.Array
    update_step: jax.Array
    critic: Any = None


class DistillBatch(NamedTuple):
    """Sequences for the student loss, leaves ``[B, T, ...]`` (env-major, so
    minibatches are whole sequences a recurrent student can replay)."""

    obs: dict[str, jax.Array]  # normalised student fields
    first: jax.Array  # [B, T]
    teacher_loc: jax.Array  # [B, T, A]
    teacher_scale: jax.Array  # [B, T, A]
    valid: jax.Array  # [B, T]
    carry: Any  # [B, H] student memory before step 0, or None
    ppo: PPOBatch | None = None  # [B, T] leaves; only with the λ·PPO term (obs: all fields, normalised)
    teacher_latent: jax.Array | None = None  # [B, T, Z]; only with latent matching


def student_critic(env: Env, config: DistillConfig):
    """The λ·PPO term's asymmetric critic: every field of the env's schema (training only)."""
    return make_critic(env.schema, hidden=config.critic_hidden, activation=config.student_activation)


def _optimised(state_params: Any, critic: Any, config: DistillConfig) -> Any:
    """What the optimiser updates: the student alone, or student and critic for λ·PPO."""
    return state_params if config.ppo_coef == 0 else {"student": state_params, "critic": critic}


def init_student(key: jax.Array, env: Env, student: Student, config: DistillConfig) -> StudentState:
    """Initial state for one seed; ``env`` is batched (``[num_envs]`` states)."""
    key, init_key, env_key = jax.random.split(key, 3)
    env_state = env.reset(env_key)
    one_obs = student.schema.select(jax.tree.map(lambda x: x[0], env_state.obs), "student")
    params = student.init(init_key, one_obs)
    critic = None
    if config.ppo_coef > 0:
        key, critic_key = jax.random.split(key)
        critic = student_critic(env, config).init(critic_key, jax.tree.map(lambda x: x[0], env_state.obs))
    return StudentState(
        params=params,
        opt_state=make_optimizer(config.learning_rate, config.max_grad_norm).init(_optimised(params, critic, config)),
        obs_stats=normalization.init_stats(one_obs),
        env_state=env_state,
        carry=student.initial_carry(config.num_envs),
        key=key,
        update_step=jnp.zeros((), jnp.int32),
        critic=critic,
    )


def teacher_probability(config: DistillConfig, update_step: jax.Array) -> jax.Array:
    """β: the probability that the teacher acts at a step of this update."""
    if config.behaviour == "teacher":
        return jnp.ones((), jnp.float32)
    if config.behaviour == "student":
        return jnp.zeros((), jnp.float32)
    frac = jnp.clip(update_step / config.beta_decay_updates, 0.0, 1.0)
    return config.beta_start + frac * (config.beta_end - config.beta_start)


def collection_policy(teacher_actor, teacher: FrozenTeacher, student: Student, student_params, student_stats, beta,
                      record_latent: bool = False):
    """The behaviour policy; records the teacher's distribution (and latent) in ``extras``."""

    def policy(carry, obs, first, key):
        act_key, mix_key = jax.random.split(key)
        teacher_dist = action_distribution(teacher_actor.apply, teacher.params, teacher.obs_stats, obs)
        student_obs = normalization.normalize(student_stats, student.schema.select(obs, "student"))
        carry, student_dist = student.step(student_params, carry, student_obs, first)
        teacher_step = policy_step(teacher_dist, act_key, deterministic=False)
        student_step = policy_step(student_dist, act_key, deterministic=False)
        teacher_acts = jax.random.bernoulli(mix_key, beta, first.shape)
        out = select_rows(teacher_acts, teacher_step, student_step)
        extras = {
            "teacher_loc": teacher_dist.loc,
            "teacher_scale": teacher_dist.scale,
            "teacher_acted": teacher_acts.astype(jnp.float32),
        }
        if record_latent:
            normalised = obs if teacher.obs_stats is None else normalization.normalize(teacher.obs_stats, obs)
            extras["teacher_latent"] = teacher_actor.apply(teacher.params, normalised, method="encode")
        return carry, PolicyStep(*out[:5], extras=extras)

    return policy


def distill_loss(params, batch: DistillBatch, *, student: Student, config: DistillConfig, critic: Any = None):
    """The student's loss on a minibatch of sequences ``[b, T]``.

    ``params`` is the student's, or ``{"student", "critic"}`` with the λ·PPO
    term: ``loss = distillation + ppo_coef · (clipped surrogate + vf · value loss)``
    on the student's own (on-policy) steps; ``critic`` is its module.
    """
    time_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    student_params = params if config.ppo_coef == 0 else params["student"]
    obs = jax.tree.map(time_major, batch.obs)
    first = time_major(batch.first)
    if config.latent_coef > 0:
        dist, latent = student.sequence_with_latent(student_params, batch.carry, obs, first)
    else:
        dist = student.sequence(student_params, batch.carry, obs, first)
    teacher = losses.TanhGaussian(time_major(batch.teacher_loc), time_major(batch.teacher_scale))
    valid = time_major(batch.valid)
    if config.objective == "kl":
        loss, metrics = losses.kl_distillation_loss(
            dist, teacher, valid, ent_coef=config.ent_coef, direction=config.kl_direction, entropy_kind=config.entropy
        )
    else:
        loss, mse_metrics = losses.action_mse_loss(jnp.tanh(dist.loc), jnp.tanh(teacher.loc), valid)
        metrics = {"valid_fraction": mse_metrics["valid_fraction"]}
    if config.latent_coef > 0:  # RMA-style feature matching, same mask
        latent_loss, latent_metrics = losses.latent_matching_loss(latent, time_major(batch.teacher_latent), valid)
        loss = loss + config.latent_coef * latent_loss
        metrics = {**metrics, **latent_metrics}
    if config.ppo_coef == 0:
        return loss, metrics
    ppo_total, ppo_metrics = ppo_loss(
        {"actor": None, "critic": params["critic"]},
        jax.tree.map(time_major, batch.ppo),
        apply_actor=lambda _, __: dist,  # the replayed sequence above (recurrent students too)
        apply_critic=critic.apply,
        clip_eps=config.ppo_clip_eps,
        vf_coef=config.ppo_vf_coef,
        ent_coef=0.0,  # the entropy bonus is already in the distillation term
    )
    metrics = {**metrics, "distill_loss": loss, **{f"ppo/{k}": v for k, v in ppo_metrics.items()}}
    return loss + config.ppo_coef * ppo_total, metrics


def ppo_targets(tr, critic_module, critic_params, teacher: FrozenTeacher, config: DistillConfig) -> PPOBatch:
    """GAE advantages and returns of the student's rollout ``[T, B]`` for the λ·PPO term."""
    normalise = lambda o: o if teacher.obs_stats is None else normalization.normalize(teacher.obs_stats, o)  # noqa: E731
    obs = normalise(tr.obs)
    values = critic_module.apply(critic_params, obs)
    next_values = critic_module.apply(critic_params, normalise(tr.next_obs))
    advantages, returns = compute_gae(
        tr.reward * config.reward_scale, values, next_values, tr.terminated, tr.truncated,
        config.gamma, config.gae_lambda,
    )
    return PPOBatch(obs=obs, raw_actions=tr.policy.raw_action, old_log_probs=tr.policy.log_prob,
                    advantages=advantages, returns=returns)


class DistillCollected(NamedTuple):
    """What one distillation iteration's collection half produces (see :func:`collect`)."""

    env_state: EnvState  # [num_envs] batched env state after the rollout
    carry: Any  # [num_envs, H] student memory after the rollout (None for MLPs)
    obs_stats: normalization.RunningStats  # student normaliser updated with this rollout
    batch: DistillBatch  # [num_envs, T] sequences, targets masked
    transitions: Transition  # [T, num_envs] the raw rollout, for metrics and guards
    mask_metrics: dict[str, jax.Array]  # fraction each mask rule dropped
    beta: jax.Array  # probability the teacher acted in this rollout


def collect(
    state: StudentState,
    teacher: FrozenTeacher,
    key: jax.Array,
    *,
    env: Env,
    teacher_actor: Any,
    student: Student,
    config: DistillConfig,
) -> DistillCollected:
    """The collection half of a distillation iteration: rollout under the behaviour policy ->
    student normaliser -> mask -> env-major sequences (+ GAE targets with the λ·PPO term)."""
    beta = teacher_probability(config, state.update_step)
    policy = collection_policy(teacher_actor, teacher, student, state.params, state.obs_stats, beta,
                               record_latent=config.latent_coef > 0)
    env_state, carry, tr = unroll(env, state.env_state, policy, state.carry, key, config.unroll_length)

    student_obs = student.schema.select(tr.obs, "student")
    obs_stats = state.obs_stats
    if config.normalize_observations:
        obs_stats = normalization.update_stats(obs_stats, student_obs)

    teacher_loc, teacher_scale = tr.policy.extras["teacher_loc"], tr.policy.extras["teacher_scale"]
    valid, mask_metrics = masks.valid_mask(
        config.mask_rule,
        masks.MaskInputs(tr.terminated, tr.truncated, tr.first, teacher_loc, teacher_scale),
        dict(config.mask_thresholds),
    )
    env_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    # Masked (e.g. non-finite) teacher targets must not poison the loss arithmetic.
    safe_loc = jnp.where(valid[..., None] > 0, teacher_loc, 0.0)
    safe_scale = jnp.where(valid[..., None] > 0, teacher_scale, 1.0)
    batch = DistillBatch(
        obs=jax.tree.map(env_major, normalization.normalize(obs_stats, student_obs)),
        first=env_major(tr.first),
        teacher_loc=env_major(safe_loc),
        teacher_scale=env_major(safe_scale),
        valid=env_major(valid),
        carry=state.carry,
        teacher_latent=env_major(tr.policy.extras["teacher_latent"]) if config.latent_coef > 0 else None,
    )
    if config.ppo_coef > 0:  # only here are rewards read
        targets = ppo_targets(tr, student_critic(env, config), state.critic, teacher, config)
        batch = batch._replace(ppo=jax.tree.map(env_major, targets))
    return DistillCollected(env_state, carry, obs_stats, batch, tr, mask_metrics, beta)


def distill_epochs(
    state: StudentState, batch: DistillBatch, key: jax.Array, *, env: Env, student: Student, config: DistillConfig
) -> tuple[Any, Any, Any, dict[str, jax.Array]]:
    """The SGD half: ``num_epochs`` x ``num_minibatches`` steps of :func:`distill_loss` on ``batch``.

    Returns ``(student params, critic params or None, opt_state, metrics)``.
    """
    critic = student_critic(env, config) if config.ppo_coef > 0 else None

    def loss_fn(params, minibatch):
        return distill_loss(params, minibatch, student=student, config=config, critic=critic)

    optimised, opt_state, metrics = sgd_epochs(
        _optimised(state.params, state.critic, config),
        state.opt_state,
        batch,
        key,
        loss_fn=loss_fn,
        optimizer=make_optimizer(config.learning_rate, config.max_grad_norm),
        num_epochs=config.num_epochs,
        num_minibatches=config.num_minibatches,
    )
    if config.ppo_coef == 0:
        return optimised, None, opt_state, metrics
    return optimised["student"], optimised["critic"], opt_state, metrics


def distill_step(
    state: StudentState,
    teacher: FrozenTeacher,
    *,
    env: Env,
    teacher_actor: Any,
    student: Student,
    config: DistillConfig,
) -> tuple[StudentState, dict[str, Any]]:
    """One distillation iteration for one seed (vmap over seeds, scan over iterations):
    :func:`collect` then :func:`distill_epochs`."""
    key, rollout_key, sgd_key = jax.random.split(state.key, 3)
    got = collect(state, teacher, rollout_key, env=env, teacher_actor=teacher_actor, student=student, config=config)
    params, critic_params, opt_state, sgd_metrics = distill_epochs(
        state, got.batch, sgd_key, env=env, student=student, config=config)
    tr = got.transitions
    new_state = state.replace(
        params=params,
        opt_state=opt_state,
        obs_stats=got.obs_stats,
        env_state=got.env_state,
        carry=got.carry,
        key=key,
        update_step=state.update_step + 1,
        critic=critic_params,
    )
    metrics = {
        **sgd_metrics,
        **got.mask_metrics,
        **episode_metrics(tr),
        "beta": got.beta,
        "teacher_acted": jnp.mean(tr.policy.extras["teacher_acted"]),
        **{f"env/{k}": jnp.mean(v) for k, v in tr.metrics.items()},
        "finite": {
            **finiteness(student.schema.select(tr.obs, "student"), "obs"),
            **({"reward": jnp.all(jnp.isfinite(tr.reward))} if config.ppo_coef > 0 else {}),
            "loss": jnp.isfinite(sgd_metrics["loss"]),
            **finiteness(_optimised(params, critic_params, config), "params"),
        },
    }
    return new_state, metrics
