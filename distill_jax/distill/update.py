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

``config`` supplies the static settings (sizes, the objective's kind, the
behaviour's kind, whether the PPO term and latent matching exist); the float
coefficients (learning rate, ε, latent and PPO-term weights, the β schedule's
ends) are read from ``state.hparams`` (:mod:`distill_jax.hyperparams`).
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
from distill_jax.hyperparams import Hyperparams, coefficients
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
      hparams: the ``DistillConfig``'s traced coefficients as float32 scalars, nested like the
        config (``hparams["objective"]["ent_coef"]``; :func:`distill_jax.hyperparams.coefficients`).
      critic: the PPO term's critic params (``None`` for pure distillation);
        when present ``opt_state`` covers ``{"student": params, "critic": critic}``.
    """

    params: Any
    opt_state: optax.OptState
    obs_stats: normalization.RunningStats
    env_state: EnvState
    carry: Any
    key: jax.Array
    update_step: jax.Array
    hparams: Hyperparams
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
    ppo: PPOBatch | None = None  # [B, T] leaves; only with the PPO term (obs: all fields, normalised)
    teacher_latent: jax.Array | None = None  # [B, T, Z]; only with latent matching


def student_critic(env: Env, config: DistillConfig):
    """The PPO term's asymmetric critic: every field of the env's schema (training only)."""
    return make_critic(env.schema, hidden=config.ppo_term.critic_hidden, activation=config.student.activation)


def _optimised(state_params: Any, critic: Any, config: DistillConfig) -> Any:
    """What the optimiser updates: the student alone, or student and critic with the PPO term."""
    return {"student": state_params, "critic": critic} if config.ppo_term.enabled else state_params


def init_student(key: jax.Array, env: Env, student: Student, config: DistillConfig,
                 hparams: Hyperparams | None = None) -> StudentState:
    """Initial state for one seed; ``env`` is batched (``[num_envs]`` states); ``hparams``
    defaults to ``config``'s coefficients (a sweep member passes its own)."""
    hparams = coefficients(config) if hparams is None else hparams
    key, init_key, env_key = jax.random.split(key, 3)
    env_state = env.reset(env_key)
    one_obs = student.schema.select(jax.tree.map(lambda x: x[0], env_state.obs), "student")
    params = student.init(init_key, one_obs)
    critic = None
    if config.ppo_term.enabled:
        key, critic_key = jax.random.split(key)
        critic = student_critic(env, config).init(critic_key, jax.tree.map(lambda x: x[0], env_state.obs))
    optimizer = make_optimizer(hparams["learning_rate"], hparams["max_grad_norm"], config.anneal_steps)
    return StudentState(
        params=params,
        opt_state=optimizer.init(_optimised(params, critic, config)),
        obs_stats=normalization.init_stats(one_obs),
        env_state=env_state,
        carry=student.initial_carry(config.num_envs),
        key=key,
        update_step=jnp.zeros((), jnp.int32),
        hparams=hparams,
        critic=critic,
    )


def teacher_probability(config: DistillConfig, hparams: Hyperparams, update_step: jax.Array) -> jax.Array:
    """β: the probability that the teacher acts at a step of this update (``config.behaviour.kind``
    decides the schedule; its ends come from ``hparams["behaviour"]``)."""
    if config.behaviour.kind == "teacher":
        return jnp.ones((), jnp.float32)
    if config.behaviour.kind == "student":
        return jnp.zeros((), jnp.float32)
    start, end = hparams["behaviour"]["beta_start"], hparams["behaviour"]["beta_end"]
    frac = jnp.clip(update_step / config.behaviour.beta_decay_updates, 0.0, 1.0)
    return start + frac * (end - start)


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


def distill_loss(
    params: Any,
    batch: DistillBatch,
    *,
    student: Student,
    objective: str = "kl",
    kl_direction: str = "reverse",
    entropy_kind: str = "gaussian",
    ent_coef: float | jax.Array = 0.0,
    latent_coef: float | jax.Array | None = None,
    ppo_term: Hyperparams | None = None,
    critic: Any = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The student's loss on a minibatch of sequences ``[b, T]``.

    ``objective``: ``"kl"`` (``KL - ent_coef · H``, direction ``kl_direction``) or ``"mse"``
    (masked action MSE). ``latent_coef`` (``None``: no latent matching) weighs the RMA-style
    regression of the teacher's latent. ``ppo_term`` (``None``: pure distillation) holds the PPO
    term's coefficients (``coef``, ``clip_eps``, ``vf_coef``); then ``params`` is
    ``{"student", "critic"}`` and ``loss = distillation + coef · (clipped surrogate + vf · value
    loss)`` on the student's own (on-policy) steps, ``critic`` being its module.
    """
    time_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    student_params = params if ppo_term is None else params["student"]
    obs = jax.tree.map(time_major, batch.obs)
    first = time_major(batch.first)
    if latent_coef is not None:
        dist, latent = student.sequence_with_latent(student_params, batch.carry, obs, first)
    else:
        dist = student.sequence(student_params, batch.carry, obs, first)
    teacher = losses.TanhGaussian(time_major(batch.teacher_loc), time_major(batch.teacher_scale))
    valid = time_major(batch.valid)
    if objective == "kl":
        loss, metrics = losses.kl_distillation_loss(
            dist, teacher, valid, ent_coef=ent_coef, direction=kl_direction, entropy_kind=entropy_kind
        )
    else:
        loss, mse_metrics = losses.action_mse_loss(jnp.tanh(dist.loc), jnp.tanh(teacher.loc), valid)
        metrics = {"valid_fraction": mse_metrics["valid_fraction"]}
    if latent_coef is not None:  # RMA-style feature matching, same mask
        latent_loss, latent_metrics = losses.latent_matching_loss(latent, time_major(batch.teacher_latent), valid)
        loss = loss + latent_coef * latent_loss
        metrics = {**metrics, **latent_metrics}
    if ppo_term is None:
        return loss, metrics
    ppo_total, ppo_metrics = ppo_loss(
        {"actor": None, "critic": params["critic"]},
        jax.tree.map(time_major, batch.ppo),
        apply_actor=lambda _, __: dist,  # the replayed sequence above (recurrent students too)
        apply_critic=critic.apply,
        clip_eps=ppo_term["clip_eps"],
        vf_coef=ppo_term["vf_coef"],
        ent_coef=0.0,  # the entropy bonus is already in the distillation term
    )
    metrics = {**metrics, "distill_loss": loss, **{f"ppo/{k}": v for k, v in ppo_metrics.items()}}
    return loss + ppo_term["coef"] * ppo_total, metrics


def make_distill_loss(student: Student, config: DistillConfig, hparams: Hyperparams, critic: Any = None):
    """:func:`distill_loss` as ``(params, minibatch) -> (loss, metrics)``: the static choices from
    ``config``, the coefficients from ``hparams``, bound in one place."""
    objective = config.objective

    def loss_fn(params, minibatch):
        return distill_loss(
            params, minibatch, student=student, objective=objective.kind, kl_direction=objective.kl_direction,
            entropy_kind=objective.entropy, ent_coef=hparams["objective"]["ent_coef"],
            latent_coef=hparams["objective"]["latent_coef"] if config.student.latent_head else None,
            ppo_term=hparams["ppo_term"] if config.ppo_term.enabled else None, critic=critic,
        )

    return loss_fn


def ppo_targets(tr, critic_module, critic_params, teacher: FrozenTeacher, ppo_term: Hyperparams) -> PPOBatch:
    """GAE advantages and returns of the student's rollout ``[T, B]`` for the PPO term
    (``ppo_term``: its coefficients ``reward_scale``, ``gamma``, ``gae_lambda``)."""
    normalise = lambda o: o if teacher.obs_stats is None else normalization.normalize(teacher.obs_stats, o)  # noqa: E731
    obs = normalise(tr.obs)
    values = critic_module.apply(critic_params, obs)
    next_values = critic_module.apply(critic_params, normalise(tr.next_obs))
    advantages, returns = compute_gae(
        tr.reward * ppo_term["reward_scale"], values, next_values, tr.terminated, tr.truncated,
        ppo_term["gamma"], ppo_term["gae_lambda"],
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
    student normaliser -> mask (the rule in force: :func:`distill_jax.distill.masks.in_force`)
    -> env-major sequences (+ GAE targets with the PPO term)."""
    beta = teacher_probability(config, state.hparams, state.update_step)
    policy = collection_policy(teacher_actor, teacher, student, state.params, state.obs_stats, beta,
                               record_latent=config.student.latent_head)
    env_state, carry, tr = unroll(env, state.env_state, policy, state.carry, key, config.unroll_length)

    student_obs = student.schema.select(tr.obs, "student")
    obs_stats = state.obs_stats
    if config.normalize_observations:
        obs_stats = normalization.update_stats(obs_stats, student_obs)

    teacher_loc, teacher_scale = tr.policy.extras["teacher_loc"], tr.policy.extras["teacher_scale"]
    rule, thresholds = masks.in_force(config.mask, env.schema)
    valid, mask_metrics = masks.valid_mask(
        rule, masks.MaskInputs(tr.terminated, tr.truncated, tr.first, teacher_loc, teacher_scale), thresholds
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
        teacher_latent=env_major(tr.policy.extras["teacher_latent"]) if config.student.latent_head else None,
    )
    if config.ppo_term.enabled:  # only here are rewards read
        targets = ppo_targets(tr, student_critic(env, config), state.critic, teacher, state.hparams["ppo_term"])
        batch = batch._replace(ppo=jax.tree.map(env_major, targets))
    return DistillCollected(env_state, carry, obs_stats, batch, tr, mask_metrics, beta)


def distill_epochs(
    state: StudentState, batch: DistillBatch, key: jax.Array, *, env: Env, student: Student, config: DistillConfig
) -> tuple[Any, Any, Any, dict[str, jax.Array]]:
    """The SGD half: ``num_epochs`` x ``num_minibatches`` steps of :func:`distill_loss` on ``batch``.

    Returns ``(student params, critic params or None, opt_state, metrics)``.
    """
    hp = state.hparams
    critic = student_critic(env, config) if config.ppo_term.enabled else None
    optimised, opt_state, metrics = sgd_epochs(
        _optimised(state.params, state.critic, config),
        state.opt_state,
        batch,
        key,
        loss_fn=make_distill_loss(student, config, hp, critic),
        optimizer=make_optimizer(hp["learning_rate"], hp["max_grad_norm"], config.anneal_steps),
        num_epochs=config.num_epochs,
        num_minibatches=config.num_minibatches,
    )
    if not config.ppo_term.enabled:
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
            **({"reward": jnp.all(jnp.isfinite(tr.reward))} if config.ppo_term.enabled else {}),
            "loss": jnp.isfinite(sgd_metrics["loss"]),
            **finiteness(_optimised(params, critic_params, config), "params"),
        },
    }
    return new_state, metrics
