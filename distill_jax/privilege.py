"""What each privileged field is worth to the teacher: permute it across envs, measure the loss.

On the held-out panel (env ``i`` reset with ``panel.reset_keys()[i]``), the teacher is rolled out
once as it is and once per field with that one field *permuted across environments*: at every
step env ``i`` reads env ``perm[i]``'s current value of the field and its own value of every other
field. The field's marginal distribution is untouched (the values are real ones from the same
step) but its link to env ``i``'s state is cut, so the teacher's loss of return and rise in falls
measure how much it relies on that link. A field the teacher ignores changes nothing, bit for bit.

``perm`` is a random cyclic derangement (one cycle through all ``N`` envs: no env keeps its own
value), fixed by a key and shared by all fields. All rollouts, the unpermuted teacher and every
field, are one jitted program: the policy wrapper takes a per-field 0/1 mask, and the rollout is
``vmap``-ed over ``F + 1`` masks (none, then one-hot per field).

Intervals (95 %), with ``N`` paired episodes (same reset key, with and without the permutation):

* ``return_drop_ci95`` and ``fall_rate_rise_ci95``: paired t-intervals on the per-episode
  differences (unpermuted minus permuted return; permuted minus unpermuted fall indicator).
  Returns are bounded and ``N`` is in the tens to hundreds, so the mean difference is close to
  normal; the interval is deterministic (no resampling key).
* ``fall_rate_ci95``: Wilson interval of the permuted teacher's fall rate.

A field is **used** when the lower end of its return-drop interval exceeds
``UNUSED_RELATIVE_DROP`` (1 %) of the unpermuted teacher's mean return, or the lower end of its
fall-rate-rise interval exceeds 0; otherwise it is flagged unused: the teacher's performance
gives no evidence that it needs the field.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.distill.update import FrozenTeacher
from distill_jax.envs.base import Env
from distill_jax.evaluate import Panel, rollout_first_episodes, t_interval, teacher_policy, wilson_interval
from distill_jax.rollout import Policy
from distill_jax.schema import ObservationSchema
from distill_jax.xla_options import compiler_options

# A field is used when its return drop is, with 95 % confidence, above this fraction of the
# unpermuted return (or its fall rate rises with 95 % confidence).
UNUSED_RELATIVE_DROP = 0.01


def cyclic_derangement(key: jax.Array, n: int) -> jax.Array:
    """``[n]`` int32 indices: a random permutation made of one ``n``-cycle (no fixed point).

    A uniform random permutation leaves about one env with its own value, which would dilute the
    measured effect; walking one random cycle (env ``order[k]`` reads env ``order[k + 1]``) does not.
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 environments, got {n}")
    order = jax.random.permutation(key, n)
    return jnp.zeros((n,), jnp.int32).at[order].set(jnp.roll(order, -1).astype(jnp.int32))


def permute_fields(obs: dict[str, Any], fields: Sequence[str], perm: jax.Array, mask: jax.Array) -> dict[str, Any]:
    """``obs`` with field ``fields[j]`` replaced by its rows in order ``perm`` where ``mask[j]`` is 1.

    Args:
      obs: batched observation dict, leaves ``[N, ...]``.
      fields: the names ``mask`` refers to.
      perm: ``[N]`` source env of each env's value.
      mask: ``[F]`` 0/1 per field (traced: one program serves every mask).

    Returns:
      A dict like ``obs``: a masked field's rows are exactly ``obs[field][perm]`` (values are
      moved, not blended, so each field keeps its multiset of rows); every other field is ``obs``'s.
    """
    out = dict(obs)
    for j, name in enumerate(fields):
        out[name] = jax.tree.map(lambda x: jnp.where(mask[j] > 0, x[perm], x), obs[name])
    return out


def permuted_teacher_policy(teacher_actor: Any, teacher: FrozenTeacher, fields: Sequence[str], perm: jax.Array,
                            mask: jax.Array, *, deterministic: bool = True) -> Policy:
    """The teacher's evaluation policy acting on :func:`permute_fields` of each step's observation."""
    policy = teacher_policy(teacher_actor, teacher, deterministic=deterministic)

    def permuted(carry, obs, first, key):
        return policy(carry, permute_fields(obs, fields, perm, mask), first, key)

    return permuted


def field_masks(num_fields: int) -> jax.Array:
    """``[F + 1, F]``: row 0 permutes nothing (the reference), row ``1 + j`` permutes field ``j`` only."""
    return jnp.concatenate([jnp.zeros((1, num_fields)), jnp.eye(num_fields)])


def permuted_scores(env: Env, teacher_actor: Any, teacher: FrozenTeacher, panel: Panel, fields: Sequence[str],
                    perm: jax.Array) -> dict[str, np.ndarray]:
    """First-episode scores ``[F + 1, N]`` (see :func:`~distill_jax.evaluate.first_episode_scores`):
    row 0 the unpermuted teacher, row ``1 + j`` with ``fields[j]`` permuted; one jitted program."""
    if env.episode_length is None:
        raise ValueError("privilege_value needs an env with a time limit (episode_length)")
    fields = tuple(fields)
    keys = panel.reset_keys()

    # Teacher and permutation are arguments, not closed-over constants, so another teacher or key
    # reuses the compiled program.
    @functools.partial(jax.jit, compiler_options=compiler_options())
    def run(teacher, perm):
        def one(mask):
            policy = permuted_teacher_policy(teacher_actor, teacher, fields, perm, mask,
                                             deterministic=panel.deterministic)
            return rollout_first_episodes(env, policy, None, keys, env.episode_length)

        return jax.vmap(one)(field_masks(len(fields)))

    return jax.device_get(run(teacher, perm))


def paired_t_interval(differences: np.ndarray) -> tuple[float, float]:
    """Two-sided 95 % t-interval of the mean of paired differences ``[N]`` (a point if they are all
    equal); :func:`distill_jax.evaluate.t_interval`."""
    d = np.asarray(differences, np.float64)
    if d.size < 2:
        raise ValueError(f"a paired t-interval needs at least 2 pairs, got {d.size}")
    low, high = t_interval(d)["ci95"]
    return low, high


def summarize_field(reference: dict[str, np.ndarray], permuted: dict[str, np.ndarray]) -> dict[str, Any]:
    """One field's entry from paired first-episode scores ``[N]`` without and with its permutation."""
    base_return = np.asarray(reference["return"], np.float64)
    drop = base_return - np.asarray(permuted["return"], np.float64)
    base_fall = np.asarray(reference["fall"], np.float64)
    fall = np.asarray(permuted["fall"], np.float64)
    n = drop.size
    drop_ci, rise_ci = paired_t_interval(drop), paired_t_interval(fall - base_fall)
    used = drop_ci[0] > UNUSED_RELATIVE_DROP * abs(base_return.mean()) or rise_ci[0] > 0.0
    return {
        "return_mean": float(base_return.mean() - drop.mean()),
        "return_drop": float(drop.mean()),
        "return_drop_ci95": list(drop_ci),
        "fall_rate": float(fall.mean()),
        "fall_rate_ci95": list(wilson_interval(float(fall.sum()), n)),
        "fall_rate_rise": float(fall.mean() - base_fall.mean()),
        "fall_rate_rise_ci95": list(rise_ci),
        "used": bool(used),
        "baseline_return_mean": float(base_return.mean()),
        "baseline_fall_rate": float(base_fall.mean()),
        "baseline_fall_rate_ci95": list(wilson_interval(float(base_fall.sum()), n)),
        "episodes": int(n),
    }


def privilege_value(env: Env, teacher_actor: Any, teacher: FrozenTeacher, panel: Panel, *, key: jax.Array,
                    fields: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The teacher's loss on ``panel`` when each of ``fields`` is permuted across envs (module docstring).

    Args:
      env: the unbatched task (its ``episode_length`` sets the horizon).
      teacher_actor, teacher: the frozen teacher (unbatched params: one seed).
      panel: held-out seeds, one episode each (at least 2).
      key: PRNG key of the permutation (:func:`cyclic_derangement`), shared by all fields.
      fields: fields to permute, default ``env.schema.teacher_only``; any field of the schema.

    Returns:
      ``{field: entry}`` in the order of ``fields``; each entry holds ``return_drop`` (unpermuted
      minus permuted mean return) and ``return_drop_ci95``, ``fall_rate`` (permuted) and
      ``fall_rate_ci95``, ``fall_rate_rise`` and ``fall_rate_rise_ci95``, ``used``, the permuted
      ``return_mean``, the unpermuted ``baseline_return_mean``, ``baseline_fall_rate`` (and its
      ``_ci95``), and ``episodes``. Python floats, bools and lists (JSON-able).
    """
    fields = tuple(env.schema.teacher_only if fields is None else fields)
    unknown = [f for f in fields if f not in env.schema.all_fields]
    if unknown or not fields:
        raise ValueError(f"privilege_value needs fields of the env's schema {list(env.schema.all_fields)}; got {list(fields)}")
    perm = cyclic_derangement(key, len(panel.seeds))
    scores = permuted_scores(env, teacher_actor, teacher, panel, fields, perm)
    lane = lambda i: {k: v[i] for k, v in scores.items()}  # noqa: E731
    return value_from_scores(fields, lane(0), [lane(1 + j) for j in range(len(fields))])


def value_from_scores(fields: Sequence[str], reference: dict[str, Any],
                      permuted: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`privilege_value`'s result from paired scores (``return`` and ``fall`` per episode,
    ``[N]``): the unpermuted teacher's, and the teacher's with ``fields[j]`` permuted for each ``j``
    (e.g. rows of the evaluation's suite program, :func:`permutation_view`)."""
    if len(permuted) != len(fields):
        raise ValueError(f"value_from_scores: {len(fields)} fields but {len(permuted)} permuted score sets")
    return {name: summarize_field(reference, scores) for name, scores in zip(fields, permuted)}


def permutation_view(fields: Sequence[str], perm: jax.Array) -> Callable[[dict[str, Any], jax.Array], dict[str, Any]]:
    """``(obs [N, ...], mask [F]) -> obs`` with the masked ``fields`` permuted across envs by ``perm``
    (:func:`permute_fields`): a teacher view for :func:`distill_jax.evaluate.evaluate_suite`, whose
    rows with one-hot masks are this module's measurement and with a zero mask the plain teacher."""
    fields = tuple(fields)
    return lambda obs, mask: permute_fields(obs, fields, perm, mask)


def markdown_table(result: dict[str, dict[str, Any]], schema: ObservationSchema | None = None) -> str:
    """:func:`privilege_value`'s result as a markdown table, one row per field (its schema list with ``schema``)."""
    def ci(pair, fmt):
        return f"[{pair[0]:{fmt}}, {pair[1]:{fmt}}]"

    rows = ["| field | return drop [95 % CI] | fall rate [95 % CI] | fall-rate rise [95 % CI] | used |",
            "|---|---|---|---|---|"]
    for name, r in result.items():
        label = f"`{name}`" + (f" ({schema.category_of(name)})" if schema is not None else "")
        rows.append(f"| {label} | {r['return_drop']:.2f} {ci(r['return_drop_ci95'], '.2f')} | "
                    f"{r['fall_rate']:.3f} {ci(r['fall_rate_ci95'], '.3f')} | "
                    f"{r['fall_rate_rise']:+.3f} {ci(r['fall_rate_rise_ci95'], '+.3f')} | "
                    f"{'yes' if r['used'] else '**no**'} |")
    return "\n".join(rows)
