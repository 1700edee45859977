"""Held-out evaluation: teacher and student co-computed on one panel.

The panel is a set of held-out seeds (disjoint from training seeds): env ``i``
of the panel is reset with ``PRNGKey(panel_seed_i)``. Teacher and student are
rolled out from the *same* initial states for one episode length each, with
deterministic actions by default, inside one jitted function. Each env's first
episode is scored: return, length, fall (terminated), success (the task's
``metrics["success"]`` at the episode's last step) and, for tasks that report
them, the per-step task metrics in ``EPISODE_MEAN_METRICS`` averaged over the
episode (the quadruped's xy velocity tracking error). The student's imitation
loss is measured on the teacher's trajectories, on valid teacher steps only.

The student only ever sees its deployable fields, through the evaluation
wrapper its schema names (``schema.eval_wrapper``, :data:`EVAL_WRAPPERS`; today
:func:`student_actor_only`, which forwards ``schema.student_obs`` and guards
the student actor's input).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax import normalization
from distill_jax.distill import losses, masks
from distill_jax.distill.student import Student
from distill_jax.distill.update import FrozenTeacher
from distill_jax.envs.autoreset import VmapAutoReset
from distill_jax.envs.base import Env
from distill_jax.policy import action_distribution, policy_step
from distill_jax.rollout import Policy, Transition, unroll, unroll_together
from distill_jax.schema import SchemaError
from distill_jax.suite import Perturbation, TaskSuite, perturbed
from distill_jax.xla_options import compiler_options

EVAL_SEED_OFFSET = 1_000_000  # panel seeds start here; training seeds are small integers
# Per-step task metrics the panel averages over each scored episode when the task reports them:
# a tracking task's last-step ``success`` is one noisy sample; the episode mean is the figure
# legged-locomotion work compares (``quadruped_rough``: |cmd_xy - v_xy| in m/s).
EPISODE_MEAN_METRICS = ("tracking_error",)
# Per-step task metrics read at an episode's first step: what the episode started on (a terrain
# task's tile), by which the panel is broken down (:func:`breakdown`, the task's ``panel_groups``).
EPISODE_START_METRICS = ("terrain_type", "terrain_level")


class Panel(NamedTuple):
    """Held-out evaluation seeds and settings (recorded in artifacts)."""

    seeds: tuple[int, ...]
    deterministic: bool = True

    @classmethod
    def held_out(cls, num_episodes: int, training_seeds: tuple[int, ...] = (), offset: int = EVAL_SEED_OFFSET):
        seeds = tuple(s for s in range(offset, offset + num_episodes + len(training_seeds)) if s not in training_seeds)
        return cls(seeds[:num_episodes])

    def reset_keys(self) -> jax.Array:
        """``[N, 2]`` PRNG keys, one per seed: env ``i`` of the panel resets with ``reset_keys()[i]``."""
        return jnp.stack([jax.random.PRNGKey(s) for s in self.seeds])


class Reference(NamedTuple):
    """A further policy scored on the panel beside the teacher/student pairs (the deployable-only
    baseline, the oracle student), on the same reset keys.

    Attributes:
      make_policy: ``params_m -> Policy`` for one member's parameters.
      params: every member's parameters, leading axis ``[M]`` (one per teacher/student pair); they
        are the compiled program's arguments, so new weights reuse it.
      initial_carry: ``batch -> carry`` of a recurrent policy (``None``: feed-forward).
    """

    make_policy: Callable[[Any], Policy]
    params: Any
    initial_carry: Callable[[int], Any] | None = None


def student_actor_only(student: Student, params: Any, obs_stats: Any, *, deterministic: bool = True) -> Policy:
    """The evaluation wrapper: receives the full observation dict, forwards only ``student_obs``.

    The forwarded dict goes through ``schema.guard_student`` before the actor,
    so a wrapper bug that forwarded a privileged field would raise, naming it.
    """
    schema = student.schema

    def policy(carry, obs, first, key):
        forwarded = schema.guard_student({name: obs[name] for name in schema.student_obs})
        if obs_stats is not None:
            forwarded = normalization.normalize(obs_stats, forwarded)
        carry, dist = student.step(params, carry, forwarded, first)
        return carry, policy_step(dist, key, deterministic)

    return policy


# The evaluation wrappers a schema may name in ``eval_wrapper``: how the student is run wherever it
# is scored or audited (the panel, the leak audit, the export check).
EVAL_WRAPPERS = {"student_actor_only": student_actor_only}


def eval_wrapper(student: Student, params: Any, obs_stats: Any, *, deterministic: bool = True) -> Policy:
    """The student's policy under the wrapper its schema names (``schema.eval_wrapper``).

    Raises:
      SchemaError: a wrapper this version does not have (an artifact from elsewhere).
    """
    name = student.schema.eval_wrapper
    if name not in EVAL_WRAPPERS:
        raise SchemaError(f"schema eval_wrapper {name!r} is unknown; known wrappers: {sorted(EVAL_WRAPPERS)}")
    return EVAL_WRAPPERS[name](student, params, obs_stats, deterministic=deterministic)


def student_actions(student, params, obs_stats, obs) -> jax.Array:
    """Deterministic actions ``[B, A]`` of the student evaluation wrapper on a full obs dict ``[B, ...]``
    (fresh memory for a recurrent student)."""
    batch = jax.tree.leaves(obs)[0].shape[0]
    policy = eval_wrapper(student, params, obs_stats, deterministic=True)
    first = jnp.ones((batch,), jnp.float32)
    return policy(student.initial_carry(batch), obs, first, jax.random.PRNGKey(0))[1].action


def student_act_fn(student, params, obs_stats):
    """``obs -> actions``: :func:`student_actions` with the student's parameters bound (for the leak audit)."""
    return lambda obs: student_actions(student, params, obs_stats, obs)


def teacher_policy(teacher_actor: Any, teacher: FrozenTeacher, *, deterministic: bool = True) -> Policy:
    def policy(carry, obs, first, key):
        del first
        dist = action_distribution(teacher_actor.apply, teacher.params, teacher.obs_stats, obs)
        return carry, policy_step(dist, key, deterministic)

    return policy


def first_episode_alive(tr: Transition) -> jax.Array:
    """``[T, B]``: 1 at step ``t`` while the first episode has not ended before ``t``."""
    done = jnp.maximum(tr.terminated, tr.truncated)
    return jnp.cumprod(jnp.concatenate([jnp.ones_like(done[:1]), 1.0 - done[:-1]]), axis=0)


def first_episode_scores(tr: Transition) -> dict[str, jax.Array]:
    """Per-env scores of the first episode in a ``[T, B]`` rollout that started at a reset."""
    done = jnp.maximum(tr.terminated, tr.truncated)
    alive = first_episode_alive(tr)
    ended = alive * done
    success = tr.metrics.get("success", jnp.zeros_like(done))
    length = jnp.sum(alive, axis=0)
    scores = {
        "return": jnp.sum(alive * tr.reward, axis=0),
        "length": length,
        "fall": jnp.sum(ended * tr.terminated, axis=0),
        "success": jnp.sum(ended * success, axis=0) * (1.0 - jnp.sum(ended * tr.terminated, axis=0)),
        "completed": jnp.sum(ended, axis=0),
    }
    for name in EPISODE_MEAN_METRICS:
        if name in tr.metrics:
            scores[name] = jnp.sum(alive * tr.metrics[name], axis=0) / jnp.maximum(length, 1.0)
    for name in EPISODE_START_METRICS:
        if name in tr.metrics:
            scores[f"start/{name}"] = tr.metrics[name][0]
    return scores


def first_episode_transitions(env: Env, policy: Policy, carry: Any, keys: jax.Array, horizon: int) -> Transition:
    """``[horizon, N]`` transitions of ``policy`` on ``N`` envs, env ``i`` reset with ``keys[i]``; jit-able.

    Steps after an env's first episode ends are auto-reset filler: weight them by
    :func:`first_episode_alive`.
    """
    batched = VmapAutoReset(env, keys.shape[0])
    _, _, tr = unroll(batched, batched.reset_with_keys(keys), policy, carry, jax.random.PRNGKey(0), horizon)
    return tr


def rollout_first_episodes(env: Env, policy: Policy, carry: Any, keys: jax.Array, horizon: int) -> dict[str, jax.Array]:
    """Scores each env's first episode, env ``i`` reset with ``keys[i]``; jit-able."""
    return first_episode_scores(first_episode_transitions(env, policy, carry, keys, horizon))


def make_teacher_evaluator(env: Env, teacher_actor: Any, panel: Panel):
    """A function ``FrozenTeacher -> panel metrics`` compiled once (params are arguments)."""
    keys = panel.reset_keys()

    @functools.partial(jax.jit, compiler_options=compiler_options())
    def scores(teacher: FrozenTeacher):
        policy = teacher_policy(teacher_actor, teacher, deterministic=panel.deterministic)
        return rollout_first_episodes(env, policy, None, keys, env.episode_length)

    return lambda teacher: summarize(jax.device_get(scores(teacher)))


# Steps before a fall whose imitation the diagnosis looks at: where a failing student goes wrong.
BEFORE_FALL_STEPS = 25


def explained_action_variance(student_actions: jax.Array, teacher_actions: jax.Array, valid: jax.Array) -> jax.Array:
    """``1 − Σ (a_s − a_t)² / Σ (a_t − ā_t)²`` over the valid steps and every action dimension.

    The share of the variance of the teacher's deployed (deterministic) actions that the student's
    deployed actions reproduce: 1 for a perfect copy, 0 for a student that outputs the teacher's
    mean action everywhere, negative for worse. Unlike the KL it does not depend on the students'
    action *scale*, which the two KL directions treat differently (a forward-KL student is far
    broader than its teacher, and its KL reads large while its mean actions agree), nor on the
    action units. ``nan`` when the teacher's actions do not vary (or no step is valid).

    Args:
      student_actions, teacher_actions: ``[..., A]`` squashed mean actions.
      valid: ``[...]`` 1 where the step counts.
    """
    w = valid.astype(teacher_actions.dtype)[..., None]
    count = jnp.sum(w)
    mean = jnp.sum(w * teacher_actions, axis=tuple(range(teacher_actions.ndim - 1))) / jnp.maximum(count, 1.0)
    total = jnp.sum(w * jnp.square(teacher_actions - mean))
    error = jnp.sum(w * jnp.square(student_actions - teacher_actions))
    return jnp.where(total > 1e-12, 1.0 - error / jnp.maximum(total, 1e-12), jnp.nan)


def imitation(student: losses.TanhGaussian, teacher: losses.TanhGaussian, tr: Transition,
              mask_rule: tuple[str, ...], mask_thresholds: dict[str, float] | None) -> dict[str, jax.Array]:
    """KL, action MSE and explained action variance (``action_r2``, :func:`explained_action_variance`)
    of ``student`` to ``teacher`` (``[T, N, A]``) on the valid steps of the first episodes of ``tr``,
    the fraction each mask rule dropped (``masked/<rule>``, ``masked/any``), and
    the KL over the :data:`BEFORE_FALL_STEPS` steps before the falls of ``tr`` (``kl_before_fall``,
    0 without falls): an average over whole episodes can hide the few states where a policy fails."""
    valid, masked = masks.valid_mask(
        mask_rule, masks.MaskInputs(tr.terminated, tr.truncated, tr.first, teacher.loc, teacher.scale), mask_thresholds)
    valid = valid * first_episode_alive(tr)
    kl, _ = losses.kl_distillation_loss(student, teacher, valid)
    mse, _ = losses.action_mse_loss(jnp.tanh(student.loc), jnp.tanh(teacher.loc), valid)
    r2 = explained_action_variance(jnp.tanh(student.loc), jnp.tanh(teacher.loc), valid)
    before_fall = valid * masks.steps_before_termination(tr.terminated * first_episode_alive(tr),
                                                         jnp.float32(BEFORE_FALL_STEPS))
    kl_before_fall, _ = losses.kl_distillation_loss(student, teacher, before_fall)
    return {"kl": kl, "action_mse": mse, "action_r2": r2, "kl_before_fall": kl_before_fall, **masked}


def _env_under(env: Env, perturbation: Perturbation | None, suite: TaskSuite | None) -> Env:
    return env if perturbation is None else perturbed(env, perturbation, suite)


def panel_program(
    env: Env,
    teacher_actor: Any,
    student: Student,
    panel: Panel,
    *,
    mask_rule: tuple[str, ...],
    mask_thresholds: dict[str, float] | None = None,
    suite: TaskSuite | None = None,
    references: Sequence[Reference] = (),
    teacher_view: Callable[[dict, Any], dict] | None = None,
):
    """The panel pass of one teacher/student pair as a pure function (jit- and vmap-able):
    ``(keys [N, 2], teacher, student_params, student_stats, reference_params=(), perturbation=None,
    view=None) -> (teacher_scores, student_scores, imitation, reference_scores)``; with a
    ``perturbation`` (and the task's ``suite``) the env is :func:`distill_jax.suite.perturbed` first,
    so the pass vmaps over suite conditions too. With ``teacher_view``, the teacher acts on
    ``teacher_view(obs [N, ...], view)`` (a probe of what it reads, e.g. a field permuted across the
    panel's envs: :mod:`distill_jax.privilege`), so such probes vmap with the conditions as well.

    Every policy starts from the same reset keys (common random numbers) and all of them step
    together (:func:`~distill_jax.rollout.unroll_together`): the env's step is compiled once for the
    teacher, the student and each of ``references`` (whose ``make_policy``/``initial_carry`` are used
    here; one member's parameters each arrive in ``reference_params``). The scores are
    :func:`first_episode_scores` (``[N]`` per key; ``reference_scores`` a tuple in the order of
    ``references``). ``imitation`` holds the student's KL and action MSE on the teacher's own valid
    first-episode steps and the fraction each mask rule dropped (``kl``, ``action_mse``,
    ``masked/<rule>``), and the same on the states the *student* visits, relabelled by the teacher
    (``student_states/kl``, ``student_states/action_mse``, ``student_states/masked/any``): imitation
    that holds on the teacher's states but not on the student's own is the signature of missing state
    coverage.
    """
    horizon = env.episode_length
    if horizon is None:
        raise ValueError("the panel needs an env with a time limit (episode_length)")
    n = len(panel.seeds)

    def run(keys, teacher, student_params, student_stats, reference_params=(), perturbation=None, view=None):
        count = 2 + len(references)
        batched = VmapAutoReset(_env_under(env, perturbation, suite), count * n)
        start = batched.reset_with_keys(jnp.tile(keys, (count, 1)))
        t_policy = teacher_policy(teacher_actor, teacher, deterministic=panel.deterministic)
        if teacher_view is not None:
            t_policy = _viewing(t_policy, teacher_view, view)
        policies = [t_policy,
                    eval_wrapper(student, student_params, student_stats, deterministic=panel.deterministic)]
        carries = [None, student.initial_carry(n)]
        for reference, params in zip(references, reference_params, strict=True):
            policies.append(reference.make_policy(params))
            carries.append(None if reference.initial_carry is None else reference.initial_carry(n))
        t_tr, s_tr, *r_trs = unroll_together(batched, start, policies, carries, jax.random.PRNGKey(0), horizon)
        # Imitation claim: the student's distribution on the teacher's own (valid) steps.
        student_obs = normalization.normalize(student_stats, student.schema.select(t_tr.obs, "student"))
        s_dist = student.sequence(student_params, student.initial_carry(n), student_obs, t_tr.first)
        t_dist = losses.TanhGaussian(t_tr.policy.loc, t_tr.policy.scale)
        on_teacher_states = imitation(s_dist, t_dist, t_tr, mask_rule, mask_thresholds)
        # The student's own states, relabelled by the teacher (what DAgger would train on).
        relabel = action_distribution(teacher_actor.apply, teacher.params, teacher.obs_stats, s_tr.obs)
        on_student_states = imitation(losses.TanhGaussian(s_tr.policy.loc, s_tr.policy.scale), relabel, s_tr,
                                      mask_rule, mask_thresholds)
        student_states = {f"student_states/{k}": v for k, v in on_student_states.items()
                          if k in ("kl", "action_mse", "action_r2", "kl_before_fall", "masked/any")}
        return (first_episode_scores(t_tr), first_episode_scores(s_tr), {**on_teacher_states, **student_states},
                tuple(first_episode_scores(tr) for tr in r_trs))

    return run


def _viewing(policy: Policy, teacher_view: Callable[[dict, Any], dict], view: Any) -> Policy:
    """``policy`` acting on ``teacher_view(obs, view)``."""
    return lambda carry, obs, first, key: policy(carry, teacher_view(obs, view), first, key)


def evaluate_panel(
    env: Env,
    teacher_actor: Any,
    teacher: FrozenTeacher,
    student: Student,
    student_params: Any,
    student_stats: Any,
    panel: Panel,
    *,
    mask_rule: tuple[str, ...],
    mask_thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Co-computes teacher and student metrics on ``panel`` (one jitted pass).

    Args:
      env: the unbatched task (its ``episode_length`` sets the horizon).
      teacher_actor, teacher: the frozen teacher (unbatched params: one seed).
      student, student_params, student_stats: the student (one seed).
      panel: held-out seeds; one episode per seed.
      mask_rule, mask_thresholds: which teacher steps count for imitation.

    Returns:
      ``{"teacher": {...}, "student": {...}, "imitation": {...}}`` of Python
      floats: ``return_mean``, ``return_std``, ``success_rate``, ``fall_rate`` (each rate with
      its 95 % interval ``<rate>_ci95``), ``episode_length_mean`` (and ``<metric>_mean`` for each of
      ``EPISODE_MEAN_METRICS`` the task reports) for each policy; ``kl``, ``action_mse``,
      ``masked/<rule>`` for the imitation claim.
    """
    members = evaluate_members(env, teacher_actor, jax.tree.map(lambda x: x[None], teacher), student,
                               jax.tree.map(lambda x: x[None], student_params),
                               jax.tree.map(lambda x: x[None], student_stats), panel,
                               mask_rule=mask_rule, mask_thresholds=mask_thresholds)
    return members[0]


def evaluate_members(
    env: Env,
    teacher_actor: Any,
    teachers: FrozenTeacher,
    student: Student,
    student_params: Any,
    student_stats: Any,
    panel: Panel,
    *,
    mask_rule: tuple[str, ...],
    mask_thresholds: dict[str, float] | None = None,
    references: Mapping[str, Reference] | None = None,
) -> list[dict[str, Any]]:
    """:func:`evaluate_panel` for ``M`` teacher/student pairs (seeds, sweep members) in one program.

    ``teachers``, ``student_params`` and ``student_stats`` carry a leading member axis ``[M]``, as
    does each of ``references``' parameters; every member is scored on the same reset keys. Returns
    one :func:`evaluate_panel`-style dict per member; with ``references``, each also holds
    ``references``: ``{name: {"summary": summarize(...), "episodes": episodes(...)}}``.
    """
    names, chosen = _split(references)
    run = panel_program(env, teacher_actor, student, panel, mask_rule=mask_rule, mask_thresholds=mask_thresholds,
                        references=chosen)
    # Parameters are arguments, not closed-over constants: a closure would bake them into the
    # program, so every newly trained policy would compile again and add a cache entry.
    program = jax.jit(jax.vmap(run, in_axes=(None, 0, 0, 0, 0)), compiler_options=compiler_options())
    out = program(panel.reset_keys(), teachers, student_params, student_stats, tuple(r.params for r in chosen))
    return _members(jax.device_get(out), names)


def _split(references: Mapping[str, Reference] | None) -> tuple[tuple[str, ...], tuple[Reference, ...]]:
    references = dict(references or {})
    return tuple(references), tuple(references.values())


def _members(out: tuple, names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Per-member dicts from a panel program's ``(teacher_scores, student_scores, imitation,
    reference_scores)`` ``[M]``."""
    teacher_scores, student_scores, imitation, reference_scores = out
    members = int(jax.tree.leaves(imitation)[0].shape[0])
    result = []
    for m in range(members):
        member = {"teacher": summarize(_pick(teacher_scores, m)), "student": summarize(_pick(student_scores, m)),
                  "imitation": {k: float(v[m]) for k, v in imitation.items()},
                  "episodes": {"teacher": episodes(_pick(teacher_scores, m)),
                               "student": episodes(_pick(student_scores, m))}}
        if names:
            member["references"] = {name: {"summary": summarize(_pick(scores, m)), "episodes": episodes(_pick(scores, m))}
                                    for name, scores in zip(names, reference_scores, strict=True)}
        result.append(member)
    return result


def _pick(tree: Any, m: int) -> Any:
    return jax.tree.map(lambda x: x[m], tree)


def episodes(scores: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Per-episode return and fall (``[N]`` lists, panel order) of :func:`first_episode_scores`: the raw
    material of paired comparisons between policies that share the panel's reset keys."""
    out = {"return": np.asarray(scores["return"], np.float64).tolist(),
           "fall": np.asarray(scores["fall"], np.float64).tolist()}
    for name in EPISODE_START_METRICS:  # what each episode started on, where the task says
        if f"start/{name}" in scores:
            out[name] = np.asarray(scores[f"start/{name}"]).astype(int).tolist()
    return out


def breakdown(policies: dict[str, dict[str, list[float]]], group: str, labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """The panel split by what each episode started on (e.g. its terrain type).

    Args:
      policies: ``{policy name: episodes(...)}`` on the same panel (the same reset keys, so every
        policy's ``k``-th episode started on the same tile); each holds ``group``'s per-episode
        index (:data:`EPISODE_START_METRICS`).
      group: the per-episode index (``terrain_type``); labels: its names by index.

    Returns:
      One row per label with episodes: ``{"group", "label", "episodes", <policy>: {"return_mean",
      "return_ci95", "fall_rate", "fall_rate_ci95"}}`` (t-interval over the label's episodes, ``None``
      for one; Wilson interval; a label no episode started on is left out).
    """
    first = next(iter(policies.values()))
    for name, eps in policies.items():
        if list(eps[group]) != list(first[group]):
            raise ValueError(f"breakdown by {group!r}: policy {name!r} started its episodes elsewhere; the "
                             "policies were not scored on the same panel")
    rows = []
    for label, chosen in episode_groups(first[group], labels):
        n = int(chosen.sum())
        row: dict[str, Any] = {"group": group, "label": label, "episodes": n}
        for name, eps in policies.items():
            falls = float(np.asarray(eps["fall"], np.float64)[chosen].sum())
            returns = t_interval(np.asarray(eps["return"], np.float64)[chosen])
            row[name] = {"return_mean": returns["mean"], "return_ci95": returns["ci95"],
                         "fall_rate": falls / n, "fall_rate_ci95": list(wilson_interval(falls, n))}
        rows.append(row)
    return rows


def episode_groups(index: list[int] | np.ndarray, labels: tuple[str, ...] | list[str]) -> list[tuple[str, np.ndarray]]:
    """``(label, [N] bool mask)`` for each label some episode's ``index`` names, in label order."""
    index = np.asarray(index, np.int64)
    return [(label, index == i) for i, label in enumerate(labels) if np.any(index == i)]


def score_members(env: Env, panel: Panel, make_policy: Any, params: Any, initial_carry: Any = None, *,
                  suite: TaskSuite | None = None, perturbations: Perturbation | None = None) -> list:
    """Panel statistics of ``M`` members of one kind of policy, one jitted program over the members
    (and over ``C`` suite conditions when ``perturbations`` ``[C]`` are given).

    Args:
      env: the unbatched task; panel: its held-out seeds (the same reset keys as every other policy).
      make_policy: ``params_m -> Policy`` (e.g. a reference policy's :func:`teacher_policy`).
      params: the members' parameters, leading axis ``[M]`` (passed as arguments, not constants).
      initial_carry: ``batch -> carry`` of a recurrent policy (``None``: feed-forward).
      suite, perturbations: the task's suite and the conditions' stacked knobs.

    Returns:
      One ``{"summary": summarize(...), "episodes": episodes(...)}`` per member; with
      ``perturbations``, one such list per condition.
    """
    n = len(panel.seeds)

    def run(keys, member_params, perturbation=None):
        batched = VmapAutoReset(_env_under(env, perturbation, suite), n)
        carry = None if initial_carry is None else initial_carry(n)
        _, _, tr = unroll(batched, batched.reset_with_keys(keys), make_policy(member_params), carry,
                          jax.random.PRNGKey(0), env.episode_length)
        return first_episode_scores(tr)

    members = int(jax.tree.leaves(params)[0].shape[0])
    result = lambda s: [{"summary": summarize(_pick(s, m)), "episodes": episodes(_pick(s, m))}  # noqa: E731
                        for m in range(members)]
    if perturbations is None:
        program = jax.jit(jax.vmap(run, in_axes=(None, 0)), compiler_options=compiler_options())
        return result(jax.device_get(program(panel.reset_keys(), params)))
    over_members = jax.vmap(run, in_axes=(None, 0, None))
    program = jax.jit(jax.vmap(over_members, in_axes=(None, None, 0)), compiler_options=compiler_options())
    scores = jax.device_get(program(panel.reset_keys(), params, perturbations))
    conditions = int(jax.tree.leaves(perturbations)[0].shape[0])
    return [result(_pick(scores, c)) for c in range(conditions)]


def evaluate_suite(
    env: Env,
    suite: TaskSuite,
    perturbations: Perturbation,
    teacher_actor: Any,
    teachers: FrozenTeacher,
    student: Student,
    student_params: Any,
    student_stats: Any,
    panel: Panel,
    *,
    mask_rule: tuple[str, ...],
    mask_thresholds: dict[str, float] | None = None,
    references: Mapping[str, Reference] | None = None,
    teacher_view: Callable[[dict, Any], dict] | None = None,
    views: Any = None,
) -> list[list[dict[str, Any]]]:
    """:func:`evaluate_members` under each of ``C`` suite conditions (``perturbations`` ``[C]``), all
    ``C × M`` teacher/student pairs and their ``references`` in one program on the same reset keys,
    one call. With ``teacher_view`` (see :func:`panel_program`),
    condition ``c``'s teacher acts on ``teacher_view(obs, views[c])``.

    Returns ``[C][M]`` dicts like :func:`evaluate_members`' (``teacher``, ``student``, ``imitation``,
    ``episodes``, and ``references`` where given).
    """
    names, chosen = _split(references)
    run = panel_program(env, teacher_actor, student, panel, mask_rule=mask_rule, mask_thresholds=mask_thresholds,
                        suite=suite, references=chosen, teacher_view=teacher_view)
    over_members = jax.vmap(run, in_axes=(None, 0, 0, 0, 0, None, None))
    over_rows = jax.vmap(over_members, in_axes=(None, None, None, None, None, 0, None if views is None else 0))

    @functools.partial(jax.jit, compiler_options=compiler_options())
    def suite_program(keys, teachers, student_params, student_stats, reference_params, rows):
        return over_rows(keys, teachers, student_params, student_stats, reference_params, *rows)

    args = (panel.reset_keys(), teachers, student_params, student_stats, tuple(r.params for r in chosen))
    # One call: two calls of it from two threads ran side by side on the CPU (twice as fast on the
    # cart-pole) but deadlocked the quadruped's evaluation, whose larger matrix products wait on
    # XLA's intra-op thread pool from inside it.
    out = jax.device_get(suite_program(*args, (perturbations, views)))
    return [_members(_pick(out, c), names) for c in range(int(jax.tree.leaves(perturbations)[0].shape[0]))]


def paired_difference(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> dict[str, Any]:
    """Mean of ``a - b`` over paired panel episodes (same reset keys) with its 95 % t-interval.

    Pairing removes the spread of the initial states from the comparison: two policies started
    from the same states differ by less than their returns vary across states.
    """
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    out = t_interval(diff)
    return {"mean": out["mean"], "ci95": out["ci95"], "episodes": int(diff.size)}


def wilson_interval(count: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``count / n`` (z = 1.96: 95 %).

    Panel rates come from tens to hundreds of episodes, so they carry wide error bars: 7 falls in
    32 episodes is compatible with 11-39 %, and 0 falls with up to 10.7 %, where the normal
    approximation ``p ± z·sqrt(p(1-p)/n)`` would claim exactly 0.
    """
    if n <= 0:
        raise ValueError(f"wilson_interval needs at least one trial, got n={n}")
    p, z2 = count / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


# Two-sided 95 % quantiles of Student's t by degrees of freedom (a table, to keep scipy out); a dof
# between two entries takes the smaller one's (wider) quantile.
_T_975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 6: 2.446912, 7: 2.364624,
          8: 2.306004, 9: 2.262157, 10: 2.228139, 11: 2.200985, 12: 2.178813, 13: 2.160369, 14: 2.144787,
          15: 2.131450, 16: 2.119905, 17: 2.109816, 18: 2.100922, 19: 2.093024, 20: 2.085963, 25: 2.059539,
          30: 2.042272, 40: 2.021075, 60: 2.000298, 120: 1.979930}


def t_interval(values: list[float] | np.ndarray) -> dict[str, Any]:
    """Mean of independent per-seed figures with its 95 % Student-t interval.

    Returns ``{"mean", "ci95": [low, high] or None (one seed), "per_seed": [...]}``: the interval
    is over seeds (how much the figure varies from one training run to the next), not over the
    panel's episodes, which each seed's own interval covers.
    """
    x = np.asarray(values, np.float64)
    out: dict[str, Any] = {"mean": float(x.mean()), "ci95": None, "per_seed": x.tolist()}
    if x.size > 1:
        dof = x.size - 1
        quantile = _T_975[max(d for d in _T_975 if d <= dof)] if dof < 120 else 1.96
        half = quantile * x.std(ddof=1) / np.sqrt(x.size)
        out["ci95"] = [float(x.mean() - half), float(x.mean() + half)]
    return out


ACROSS_SEEDS = {"teacher": ("return_mean", "success_rate", "fall_rate", "episode_length_mean"),
                "student": ("return_mean", "success_rate", "fall_rate", "episode_length_mean"),
                "imitation": ("kl", "action_mse", "action_r2", "masked/any", "student_states/kl",
                              "student_states/action_mse", "student_states/action_r2")}


def across_seeds(members: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`t_interval` of each headline figure over the members of one grid point (one per seed)."""
    out = {role: {name: t_interval([m[role][name] for m in members]) for name in names if name in members[0][role]}
           for role, names in ACROSS_SEEDS.items()}
    for name in EPISODE_MEAN_METRICS:
        for role in ("teacher", "student"):
            if f"{name}_mean" in members[0][role]:
                out[role][f"{name}_mean"] = t_interval([m[role][f"{name}_mean"] for m in members])
    ratios = [m["student"]["return_mean"] / m["teacher"]["return_mean"] for m in members if m["teacher"]["return_mean"]]
    if ratios:
        out["student_over_teacher_return"] = t_interval(ratios)
    return out


def summarize(scores: dict[str, np.ndarray]) -> dict[str, Any]:
    """Panel statistics of one policy from :func:`first_episode_scores` (``[B]`` per key).

    Rates come with their 95 % Wilson interval (``<rate>_ci95``: ``[low, high]``).
    """
    returns = np.asarray(scores["return"], np.float64)
    n = returns.size
    counts = {"success_rate": float(np.sum(scores["success"])), "fall_rate": float(np.sum(scores["fall"]))}
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        **{name: count / n for name, count in counts.items()},
        **{f"{name}_ci95": list(wilson_interval(count, n)) for name, count in counts.items()},
        "episode_length_mean": float(np.mean(scores["length"])),
        "episodes": int(n),
        **{f"{name}_mean": float(np.mean(scores[name])) for name in EPISODE_MEAN_METRICS if name in scores},
    }
