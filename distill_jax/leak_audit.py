"""Four independent checks that no privileged field reaches the student actor.

* **structural** – the student actor's input fields are a subset of the env
  schema's ``student_obs`` (read from the network's own schema).
* **dependency** – the evaluation wrapper's actions have exactly zero
  derivative with respect to every privileged leaf of the *full* observation
  dict (a vector-Jacobian product with a random cotangent).
* **perturbation** – resampling every privileged field leaves the actions
  bit-identical.
* **dataflow** – in the jaxpr of the act function, no privileged input leaf
  reaches the actions through any chain of equations (:func:`privileged_dataflow`).

The first three each have a blind spot the fourth closes. The structural check
trusts the network's declared inputs, so a wrapper that reads a privileged
field around the network passes it. The dependency check sees derivatives
only, so a read through ``stop_gradient``, ``sign``, a comparison, an integer
cast or a ``cond`` predicate (all zero-derivative) passes it. The perturbation
check passes whenever the one resampling it tries happens not to change the
output (a threshold the noise never crosses). The dataflow check asks whether a
value *can* flow from a privileged leaf to the actions, whatever the values,
whatever the derivative.

Each check returns ``{"passed": bool, "detail": str}``. A student that reads
a privileged field fails the dataflow check and at least one other.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from distill_jax.schema import ObservationSchema

ActFn = Callable[[dict[str, jax.Array]], jax.Array]  # full obs dict [B, ...] -> actions [B, A]
Deps = frozenset  # of field names a value may depend on

# Primitives that evaluate one sub-jaxpr on their operands, in order, and return its outputs:
# their outputs' dependencies are the sub-jaxpr's, with its inputs bound to the operands.
# ``jit`` was ``pjit`` before jax 0.7; ``remat2`` is ``jax.checkpoint``. For ``custom_jvp_call`` and
# ``custom_vjp_call`` the forward value is ``call_jaxpr``'s: the custom rules only change
# derivatives, which is exactly what the dependency check cannot see past.
CALL_PRIMITIVES = {
    "jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
    "remat2": "jaxpr", "checkpoint": "jaxpr", "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr", "shard_map": "jaxpr",
}


def structural_check(env_schema: ObservationSchema, student_inputs: tuple[str, ...]) -> dict[str, Any]:
    leaked = [f for f in student_inputs if f not in env_schema.student_obs]
    return {
        "passed": not leaked,
        "detail": (f"student actor reads {list(student_inputs)} ⊆ student_obs" if not leaked
                   else f"student actor reads non-deployable field(s) {leaked}"),
    }


def dependency_check(env_schema: ObservationSchema, act: ActFn, obs: dict[str, jax.Array], key: jax.Array) -> dict[str, Any]:
    # One compiled program: run op by op, this check and the next compiled about a hundred tiny
    # programs (5 s of the evaluation on 2 CPU cores). A field the actions do not read gets JAX's
    # symbolic zero cotangent either way, so "exactly zero" means the same compiled or not.
    @jax.jit
    def vector_jacobian(obs, key):
        actions, vjp = jax.vjp(act, obs)
        return vjp(jax.random.normal(key, actions.shape, actions.dtype))[0]

    grads = vector_jacobian(obs, key)
    dependent = [f for f in env_schema.privileged if f in grads and float(jnp.max(jnp.abs(grads[f]))) != 0.0]
    checked = [f for f in env_schema.privileged if f in obs]
    return {
        "passed": not dependent,
        "detail": (f"d(actions)/d(field) == 0 exactly for privileged fields {checked}" if not dependent
                   else f"actions depend on privileged field(s) {dependent}"),
    }


def perturbation_check(env_schema: ObservationSchema, act: ActFn, obs: dict[str, jax.Array], key: jax.Array) -> dict[str, Any]:
    fields = [f for f in env_schema.privileged if f in obs]

    @jax.jit
    def resampled(obs, key):
        out = dict(obs)
        for i, field in enumerate(fields):
            out[field] = obs[field] + 10.0 * jax.random.normal(jax.random.fold_in(key, i), obs[field].shape,
                                                               obs[field].dtype)
        return out

    compiled_act = jax.jit(act)  # one program for both calls (see dependency_check)
    base = np.asarray(compiled_act(obs))
    again = np.asarray(compiled_act(resampled(obs, key)))
    identical = np.array_equal(base, again)
    return {
        "passed": bool(identical),
        "detail": ("actions bit-identical after resampling every privileged field" if identical
                   else f"actions changed by up to {float(np.max(np.abs(base - again))):.3g} when privileged fields changed"),
    }


# ------------------------------------------------------------------ dataflow
class _EffectTaint:
    """Dependencies that entered any side-effecting equation so far (one per analysis).

    A side effect (a write to a mutable ``Ref``, a host callback) can carry a value
    to a later effectful equation without any variable linking the two, so every
    effectful equation's outputs depend on everything any effectful equation has
    consumed. Conservative, and it keeps the analysis sound for stateful code.
    """

    def __init__(self):
        self.deps: Deps = Deps()


def _read(env: dict, atom: Any) -> Deps:
    # Literals (constants written into the jaxpr) depend on nothing.
    return env.get(atom, Deps()) if isinstance(atom, jex.core.Var) else Deps()


def _union(sets) -> Deps:
    out = Deps()
    for s in sets:
        out = out | s
    return out


def _open(jaxpr: Any) -> jex.core.Jaxpr:
    return jaxpr.jaxpr if isinstance(jaxpr, jex.core.ClosedJaxpr) else jaxpr


def _run(jaxpr: Any, in_deps: Sequence[Deps], effects: _EffectTaint) -> list[Deps]:
    """Dependencies of ``jaxpr``'s outputs given its inputs' (its constants depend on nothing)."""
    jaxpr = _open(jaxpr)
    if len(in_deps) != len(jaxpr.invars):
        raise ValueError(f"binding {len(in_deps)} operands to a jaxpr of {len(jaxpr.invars)} inputs")
    env: dict = dict(zip(jaxpr.invars, in_deps))
    for eqn in jaxpr.eqns:
        ins = [_read(env, v) for v in eqn.invars]
        outs = _equation(eqn, ins, effects)
        if eqn.effects:
            effects.deps = effects.deps | _union(ins)
            outs = [d | effects.deps for d in outs]
            # A mutation may write into any operand (a Ref): later readers of it see the taint.
            for v in eqn.invars:
                if isinstance(v, jex.core.Var):
                    env[v] = env.get(v, Deps()) | effects.deps
        for v, d in zip(eqn.outvars, outs):
            if not isinstance(v, jex.core.DropVar):
                env[v] = d
    return [_read(env, v) for v in jaxpr.outvars]


def _loop_fixpoint(step: Callable[[list[Deps]], list[Deps]], init: list[Deps], effects: _EffectTaint) -> list[Deps]:
    """Least ``carry ⊇ init`` with ``step(carry) ⊆ carry`` (and a stable effect taint).

    Sets only grow and there are finitely many fields, so this ends after at most
    ``len(carry) * fields + 1`` rounds. One pass is not enough: a carry slot may take
    a privileged value only on iteration two or later (a rotation of the carry).
    """
    carry = list(init)
    while True:
        before = effects.deps
        grown = [c | n for c, n in zip(carry, step(carry))]
        if grown == carry and effects.deps == before:
            return carry
        carry = grown


def _equation(eqn: Any, ins: list[Deps], effects: _EffectTaint) -> list[Deps]:
    """Dependencies of one equation's outputs from its operands'."""
    name, params = eqn.primitive.name, eqn.params
    n_out = len(eqn.outvars)
    if name in CALL_PRIMITIVES and CALL_PRIMITIVES[name] in params:
        sub = params[CALL_PRIMITIVES[name]]
        if len(_open(sub).invars) == len(ins) and len(_open(sub).outvars) == n_out:
            return _run(sub, ins, effects)
    if name == "cond":
        # Operand 0 picks the branch: every output depends on it (an implicit flow, like a
        # comparison's). Then the union over branches, since any may run.
        index, ops = ins[0], ins[1:]
        per_branch = [_run(branch, ops, effects) for branch in params["branches"]]
        return [index | _union(outs) for outs in zip(*per_branch)]
    if name == "while":
        nc, nb = params["cond_nconsts"], params["body_nconsts"]
        cond_consts, body_consts, init = ins[:nc], ins[nc:nc + nb], ins[nc + nb:]
        carry = _loop_fixpoint(lambda c: _run(params["body_jaxpr"], body_consts + c, effects), init, effects)
        # The predicate sets the trip count, so it reaches every output.
        (predicate,) = _run(params["cond_jaxpr"], cond_consts + carry, effects)
        return [c | predicate for c in carry]
    if name == "scan":
        nc, nk = params["num_consts"], params["num_carry"]
        consts, init, xs = ins[:nc], ins[nc:nc + nk], ins[nc + nk:]
        body = params["jaxpr"]
        carry = _loop_fixpoint(lambda c: _run(body, consts + c + xs, effects)[:nk], init, effects)
        ys = _run(body, consts + carry + xs, effects)[nk:]
        return carry + ys
    # Any other primitive, including ones with sub-jaxprs this function does not model
    # (reductions with a custom computation, run_state, custom_linear_solve, ...): every output
    # depends on every operand. Exact for elementwise, comparison, cast and stop_gradient
    # equations (each output element is a function of its operands, nothing more); conservative
    # otherwise.
    return [_union(ins)] * n_out


def privileged_dataflow(act: Callable[[dict], Any], obs: dict[str, Any], fields: Sequence[str]) -> list[str]:
    """Which of ``fields`` can reach any output of ``act(obs)``, by dataflow through its jaxpr.

    Traces ``act`` with :func:`jax.make_jaxpr` (abstract values: nothing is computed) and
    propagates "may depend on field X" forwards through every equation. An equation's outputs
    depend on the union of its operands' dependencies, whatever the primitive, so a value read
    through ``stop_gradient``, ``sign``, a comparison or an integer cast still counts; structural
    zeros such as ``0 * x`` also count (deliberately conservative: proving an output constant
    would need value reasoning, and a student should not read the field at all). Higher-order
    primitives are followed into their sub-jaxprs with their operands bound in order:

    * calls (``jit``, ``closed_call``, ``checkpoint``, ``custom_jvp_call``, ``custom_vjp_call``,
      ``shard_map``): the sub-jaxpr's own dataflow, so a privileged value passed in but unused
      inside does not count;
    * ``cond``: the union over branches, plus the branch index for every output;
    * ``while``/``scan``: the carry's dependencies iterated to a fixpoint (a value may move
      between carry slots over iterations), plus, for ``while``, the predicate for every output;
    * anything else with a sub-jaxpr: every output depends on every operand.

    Side-effecting equations (``Ref`` writes, callbacks) pass everything they consume to every
    later effectful equation. Not seen: values ``act`` closes over as constants (they are not
    inputs; a privileged array baked in at trace time would escape this check), and Python
    control flow on values (it cannot trace, so ``make_jaxpr`` raises).

    Args:
      act: a function of the observation dict (any output pytree: every leaf counts).
      obs: the observation dict ``{field: array or pytree}``, any batch shape.
      fields: the field names to track (e.g. ``schema.privileged``); absent ones are ignored.

    Returns:
      The names in ``fields`` some output may depend on, in the order of ``fields``.
    """
    closed = jax.make_jaxpr(act)(obs)
    paths = [path[0].key for path, _ in jax.tree_util.tree_flatten_with_path(obs)[0]]
    tracked = set(fields)
    in_deps = [Deps({name}) if name in tracked else Deps() for name in paths]
    reached = _union(_run(closed, in_deps, _EffectTaint()))
    return [f for f in fields if f in reached]


def dataflow_check(env_schema: ObservationSchema, act: ActFn, obs: dict[str, jax.Array]) -> dict[str, Any]:
    """No privileged field of ``obs`` can reach the actions (see :func:`privileged_dataflow`)."""
    checked = [f for f in env_schema.privileged if f in obs]
    reached = privileged_dataflow(act, obs, checked)
    return {
        "passed": not reached,
        "detail": (f"no dataflow path from privileged fields {checked} to the actions in the act function's jaxpr"
                   if not reached else
                   f"privileged field(s) {reached} reach the actions in the act function's jaxpr"),
    }


def audit(env_schema: ObservationSchema, student_inputs: tuple[str, ...], act: ActFn,
          obs: dict[str, jax.Array], key: jax.Array) -> dict[str, dict[str, Any]]:
    """All four checks on a batch of full observation dicts ``obs`` (``[B, ...]``)."""
    k1, k2 = jax.random.split(key)
    return {
        "structural": structural_check(env_schema, student_inputs),
        "dependency": dependency_check(env_schema, act, obs, k1),
        "perturbation": perturbation_check(env_schema, act, obs, k2),
        "dataflow": dataflow_check(env_schema, act, obs),
    }
