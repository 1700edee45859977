"""Three independent checks that no privileged field reaches the student actor.

* **structural** – the student actor's input fields are a subset of the env
  schema's ``student_obs`` (read from the network's own schema).
* **dependency** – the evaluation wrapper's actions have exactly zero
  derivative with respect to every privileged leaf of the *full* observation
  dict (a vector-Jacobian product with a random cotangent).
* **perturbation** – resampling every privileged field leaves the actions
  bit-identical.

Each check returns ``{"passed": bool, "detail": str}``. A student that reads
a privileged field fails all three.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.schema import ObservationSchema

ActFn = Callable[[dict[str, jax.Array]], jax.Array]  # full obs dict [B, ...] -> actions [B, A]


def structural_check(env_schema: ObservationSchema, student_inputs: tuple[str, ...]) -> dict[str, Any]:
    leaked = [f for f in student_inputs if f not in env_schema.student_obs]
    return {
        "passed": not leaked,
        "detail": (f"student actor reads {list(student_inputs)} ⊆ student_obs" if not leaked
                   else f"student actor reads non-deployable field(s) {leaked}"),
    }


def dependency_check(env_schema: ObservationSchema, act: ActFn, obs: dict[str, jax.Array], key: jax.Array) -> dict[str, Any]:
    actions, vjp = jax.vjp(act, obs)
    (grads,) = vjp(jax.random.normal(key, actions.shape, actions.dtype))
    dependent = [f for f in env_schema.privileged if f in grads and float(jnp.max(jnp.abs(grads[f]))) != 0.0]
    checked = [f for f in env_schema.privileged if f in obs]
    return {
        "passed": not dependent,
        "detail": (f"d(actions)/d(field) == 0 exactly for privileged fields {checked}" if not dependent
                   else f"actions depend on privileged field(s) {dependent}"),
    }


def perturbation_check(env_schema: ObservationSchema, act: ActFn, obs: dict[str, jax.Array], key: jax.Array) -> dict[str, Any]:
    base = np.asarray(act(obs))
    perturbed = dict(obs)
    for i, field in enumerate(f for f in env_schema.privileged if f in obs):
        noise = 10.0 * jax.random.normal(jax.random.fold_in(key, i), obs[field].shape, obs[field].dtype)
        perturbed[field] = obs[field] + noise
    again = np.asarray(act(perturbed))
    identical = np.array_equal(base, again)
    return {
        "passed": bool(identical),
        "detail": ("actions bit-identical after resampling every privileged field" if identical
                   else f"actions changed by up to {float(np.max(np.abs(base - again))):.3g} when privileged fields changed"),
    }


def audit(env_schema: ObservationSchema, student_inputs: tuple[str, ...], act: ActFn,
          obs: dict[str, jax.Array], key: jax.Array) -> dict[str, dict[str, Any]]:
    """All three checks on a batch of full observation dicts ``obs`` (``[B, ...]``)."""
    k1, k2 = jax.random.split(key)
    return {
        "structural": structural_check(env_schema, student_inputs),
        "dependency": dependency_check(env_schema, act, obs, k1),
        "perturbation": perturbation_check(env_schema, act, obs, k2),
    }
