"""Jitted rollouts: step a batched env for ``T`` steps under any policy.

The same :func:`unroll` serves PPO (teacher acts), distillation (teacher,
student or a mixture acts) and evaluation (deterministic student). A policy is
any pure function

    policy(carry, obs, first, key) -> (carry, PolicyStep)

where ``obs`` is the full batched observation dict (the policy selects the
fields its role may read), ``first`` is ``[B]`` (1.0 where ``obs`` starts an
episode, so recurrent policies can reset their carry) and ``carry`` is
whatever recurrent state the policy keeps (``None`` for feed-forward ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from distill_jax.envs.base import Env, EnvState


class PolicyStep(NamedTuple):
    """What a policy returns for a batch ``[B]`` of observations.

    Attributes:
      action: ``[B, A]`` action sent to the env, in [-1, 1].
      raw_action: ``[B, A]`` pre-squash Gaussian sample (``action = tanh(raw)``).
      log_prob: ``[B]`` Gaussian log-density of ``raw_action`` (no tanh Jacobian).
      loc: ``[B, A]`` pre-squash Gaussian mean.
      scale: ``[B, A]`` pre-squash Gaussian standard deviation.
      extras: further per-step outputs a caller wants recorded, e.g. the
        frozen teacher's ``teacher_loc``/``teacher_scale`` during distillation.
    """

    action: jax.Array
    raw_action: jax.Array
    log_prob: jax.Array
    loc: jax.Array
    scale: jax.Array
    extras: dict[str, jax.Array] = {}


Policy = Callable[[Any, dict, jax.Array, jax.Array], tuple[Any, PolicyStep]]


class Transition(NamedTuple):
    """A time-major batch of transitions, leaves ``[T, B, ...]``.

    ``obs[t]`` is the observation the policy acted on at step ``t``;
    ``next_obs[t]`` is the *true* observation after the step (the final
    observation of an episode that ended, not the auto-reset one), used to
    bootstrap values on truncation. ``reward``/``terminated``/``truncated``
    describe step ``t``'s outcome; ``first[t]`` marks ``obs[t]`` as an
    episode's first observation. ``metrics`` holds the env's per-step metrics
    (e.g. ``success``, ``fall``), ``episode`` the completed-episode statistics
    reported at episode ends.
    """

    obs: dict[str, jax.Array]
    next_obs: dict[str, jax.Array]
    policy: PolicyStep
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    first: jax.Array
    metrics: dict[str, jax.Array]
    episode: dict[str, jax.Array]


def _episode_info(state: EnvState) -> dict[str, jax.Array]:
    info = state.info
    keys = ("episode_return_completed", "episode_length_completed", "episode_completed")
    return {k: info[k] for k in keys if k in info}


def env_step(env: Env, env_state: EnvState, policy: Policy, carry: Any, key: jax.Array):
    """One batched step: ``(env_state, carry) -> (env_state', carry', Transition[B])``."""
    carry, out = policy(carry, env_state.obs, env_state.first, key)
    next_state = env.step(env_state, out.action)
    next_obs = next_state.info.get("final_obs", next_state.obs)
    transition = Transition(
        obs=env_state.obs,
        next_obs=next_obs,
        policy=out,
        reward=next_state.reward,
        terminated=next_state.terminated,
        truncated=next_state.truncated,
        first=env_state.first,
        metrics=next_state.metrics,
        episode=_episode_info(next_state),
    )
    return next_state, carry, transition


def unroll(
    env: Env,
    env_state: EnvState,
    policy: Policy,
    carry: Any,
    key: jax.Array,
    length: int,
) -> tuple[EnvState, Any, Transition]:
    """Steps the batched ``env`` for ``length`` steps under ``policy``.

    Args:
      env: a *batched* env (``reset``/``step`` act on ``[B]`` states with
        automatic reset), e.g. ``VmapAutoReset(get_env(...), B)``.
      env_state: its current batched state.
      policy: see the module docstring.
      carry: the policy's recurrent state (``None`` for feed-forward).
      key: PRNG key for action sampling.
      length: ``T``, static.

    Returns:
      ``(env_state, carry, transitions)`` with transitions ``[T, B, ...]``.
    """

    def body(c, step_key):
        state, pcarry = c
        state, pcarry, transition = env_step(env, state, policy, pcarry, step_key)
        return (state, pcarry), transition

    keys = jax.random.split(key, length)
    (env_state, carry), transitions = jax.lax.scan(body, (env_state, carry), keys)
    return env_state, carry, transitions


def episode_metrics(transitions: Transition) -> dict[str, jax.Array]:
    """Means over the episodes that completed in ``transitions`` (NaN-free: 0 if none)."""
    ep = transitions.episode
    if "episode_completed" not in ep:
        return {}
    done = ep["episode_completed"]
    n = jnp.sum(done)
    mean = lambda x: jnp.sum(x * done) / jnp.maximum(n, 1.0)  # noqa: E731
    return {
        "episode_return": mean(ep["episode_return_completed"]),
        "episode_length": mean(ep["episode_length_completed"]),
        "episodes_completed": n,
    }


def flatten_time(tree: Any) -> Any:
    """``[T, B, ...] -> [T * B, ...]`` for every leaf."""
    return jax.tree.map(lambda x: jnp.reshape(x, (-1,) + x.shape[2:]), tree)


def unroll_together(
    env: Env,
    env_state: EnvState,
    policies: Sequence[Policy],
    carries: Sequence[Any],
    key: jax.Array,
    length: int,
) -> tuple[Transition, ...]:
    """Steps ``P`` policies side by side on one batched ``env``, each on its own block of envs.

    Policy ``p`` acts on envs ``[p * n, (p + 1) * n)`` of the ``P * n`` envs of ``env`` (a *batched*
    env as for :func:`unroll`). Every step computes each policy's actions on its block and then steps
    all ``P * n`` envs once, so the program holds the env's step once however many policies it scores:
    on the CPU the step's compilation dominates a panel program, and separate unrolls compiled it once
    per policy. With ``env_state`` reset from the same keys in every block (common random numbers),
    policy ``p``'s transitions are those :func:`unroll` gives it alone: envs do not interact, each
    env's randomness comes from its own state, and every policy gets the same action key per step.

    Args:
      env, env_state: the batched env (``P * n`` envs) and its state.
      policies: ``P`` policies (see the module docstring); each sees only its block's observations.
      carries: their recurrent states (``None`` for feed-forward ones), each for ``n`` envs.
      key: PRNG key for action sampling (split per step, shared by the policies).
      length: ``T``, static.

    Returns:
      ``P`` transitions, leaves ``[T, n, ...]``. ``policy.extras`` keeps the keys every policy reports.
    """
    count = len(policies)
    if count == 0 or len(carries) != count:
        raise ValueError(f"unroll_together needs one carry per policy and at least one policy; got "
                         f"{count} policies and {len(carries)} carries")
    batch = jax.tree.leaves(env_state.obs)[0].shape[0]
    if batch % count:
        raise ValueError(f"unroll_together: {batch} envs do not split into {count} equal blocks")
    n = batch // count
    block = lambda tree, p: jax.tree.map(lambda x: x[p * n:(p + 1) * n], tree)  # noqa: E731

    def joint(carry, obs, first, step_key):
        steps, carry_out = [], []
        for p, policy in enumerate(policies):
            c, out = policy(carry[p], block(obs, p), first[p * n:(p + 1) * n], step_key)
            steps.append(out)
            carry_out.append(c)
        shared = set.intersection(*(set(s.extras) for s in steps))
        steps = [s._replace(extras={k: v for k, v in s.extras.items() if k in shared}) for s in steps]
        return tuple(carry_out), jax.tree.map(lambda *xs: jnp.concatenate(xs), *steps)

    _, _, transitions = unroll(env, env_state, joint, tuple(carries), key, length)
    split = lambda x: jnp.reshape(x, (x.shape[0], count, n) + x.shape[2:])  # noqa: E731
    blocks = jax.tree.map(split, transitions)
    return tuple(jax.tree.map(lambda x: x[:, p], blocks) for p in range(count))
