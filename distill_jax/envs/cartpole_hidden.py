"""Cart-pole on a hidden slope: the fast CPU task where privileged information matters.

The cart-pole of :mod:`distill_jax.envs.cartpole` (same physics, rewards, terminations and
success criterion, and the same observation fields), with what a deployed controller cannot see
made to matter:

* **a hidden slope.** Every episode the track is tilted by ``s ~ U[-slope, slope]`` (0.2 rad,
  11.5°, by default) through the ``gravity_tilt`` randomisation: gravity pulls the cart downhill
  with ``(M + m) g sin s`` (about 2-3 N against the motor's 8-12 N) and the pole's balance point sits
  ``s`` away from what its angle sensor, level with the track, calls upright. The sensors do not
  see the tilt; the teacher reads it in ``dyn_params``.
* **randomised dynamics** as on the cart-pole (pole mass ×0.5-2, length ×0.6-1.4, cart damping
  0-1), motor gain ×0.8-1.2 (narrower than the cart-pole's 0.6-1.4: a weak motor on a steep slope
  leaves no margin for the few steps the slope takes to show, teacher or not), also in ``dyn_params``.
* **episodes start at rest**: the pole within ±0.02 rad of the track's normal, speeds within
  ±0.05, the cart anywhere in ±0.5 m. The first thing that moves the system is the slope.
* **noisy positions and a long history** for the deployed policy: ``cart_pos`` and ``pole_angle``
  with std 0.01 and a ``history`` of the last 32 rows of (x, cos θ, sin θ, action), 1.28 s, from
  which a deployed controller must estimate the velocities and identify the slope and dynamics.
* **a teacher that reads the state**: the exact (ẋ, θ̇) and ``dyn_params`` (``teacher_only``), and
  not the history (``teacher_ignores``: it has the state the history summarises, as Lee et al.
  2020's teacher). The noise-free positions are the critic's (``critic_only``).

Observation fields: those of the cart-pole; ``dyn_params`` is ``[5]`` (the four above and
``slope``, each normalised to [-1, 1]), ``history`` is ``[32, 4]``.

Why privilege matters here, as on a robot (RMA, Lee 2020, Miki 2022): the slope changes *which*
action holds the pole at every step — a feed-forward push against gravity and a balance point
off the sensor's upright — and, like the velocities, must otherwise be inferred from how the cart
and pole drift under the policy's own actions, through noisy positions. The privileged teacher
reads them and learns fast and reliably from a small input; PPO reading only the deployable fields
must learn the inference from reward alone, through a 132-wide input, and learns it slowly; the
distilled student learns it from the teacher's actions, a supervised signal at every step.
Measured at the default preset's budgets over five seeds (``experiments/results/default_task_cpu.md``):
teacher 236.3 [233.4, 239.2] (no falls); the deployable-only baseline, given the teacher's plus the
student's env steps, 163.3 [152.4, 174.2] (34 % falls; teacher / baseline 1.33-1.51 on every
seed); the student, imitating the teacher's actions by masked MSE, 229.1 [224.3, 233.9] (3 % falls),
0.97 of the teacher (over ten seeds 0.96). Permuting a privileged
field across the panel costs the teacher 226 (``velocities``) and 149 (``dyn_params``) of its
return. Version 2 (the teacher read the 16-row history and no velocities) showed the teacher claim
over five seeds (1.17) but not in every single run (not shown in two of five), and its teachers fell
in up to 11 % of episodes; version 1 (tilted, moving starts) left its student at 0.84.

The task's own design knobs, accepted as overrides by :func:`make_cartpole_hidden` beside the
registry's stack overrides and every ``CartpoleConfig`` field: ``slope`` (rad, 0 drops the
range), ``bias`` (a hidden constant motor force ``U[-bias, bias]`` × 10 N through
``actuator_bias``; 0, off, by default), ``mass_range``, ``length_range``, ``gain_range``,
``damping_range`` (pairs), ``teacher_state`` (``True`` moves the noise-free ``clean_pos`` from the
critic to the teacher), ``teacher_velocities`` (``False`` moves the exact velocities to the critic,
as version 2 did; with the stack overrides ``history_length=16`` and ``history_for_teacher=True`` it
is version 2 again); the rest start is ``CartpoleConfig``'s ``init_*`` fields, overridable as such.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

from distill_jax.envs.base import Env, with_inferred_specs
from distill_jax.envs.cartpole import Cartpole, CartpoleConfig
from distill_jax.envs.randomization import ParamRange
from distill_jax.schema import ObservationSchema


class CartpoleHidden(Cartpole):
    """The cart-pole of :mod:`distill_jax.envs.cartpole` under another name; ``teacher_state``
    moves ``clean_pos`` (noise-free x, cos θ, sin θ) from the critic to the teacher."""

    name = "cartpole_hidden"
    # 2: episodes start at rest; the exact velocities are the critic's alone. 3: the teacher reads the exact
    # velocities and no history; the student's history is 32 rows.
    version = "3"
    asset = "cartpole_hidden.xml"

    def __init__(self, config: CartpoleConfig | None = None, teacher_state: bool = False,
                 teacher_velocities: bool = True, **overrides: Any):
        super().__init__(config, **overrides)
        self.teacher_state = bool(teacher_state)
        self.teacher_velocities = bool(teacher_velocities)

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        if self.teacher_state:  # only when set, so the default task's fingerprint names no extra key
            fp["teacher_state"] = True
        if not self.teacher_velocities:
            fp["teacher_velocities"] = False
        return fp

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        exact = ("velocities",) + (("clean_pos",) if self.teacher_state else ())
        critic = ("clean_pos",) if not self.teacher_state else ()
        if not self.teacher_velocities:  # the exact velocities go to the critic alone
            exact, critic = tuple(f for f in exact if f != "velocities"), ("velocities",) + critic
        bare = ObservationSchema(
            student_obs=("cart_pos", "pole_angle", "last_action"),
            teacher_only=exact,
            critic_only=critic,
        )
        return with_inferred_specs(bare, self.reset)


def hidden_ranges(slope: float, bias: float, mass: Sequence[float], length: Sequence[float], gain: Sequence[float],
                  damping: Sequence[float]) -> tuple[ParamRange, ...]:
    """The per-episode ranges, in ``dyn_params`` order: the cart-pole's four (pole mass and length
    factors, cart damping in N·s/m, motor gain factor), then ``motor_bias`` (control units, × 10 N)
    if ``bias`` and ``slope`` (rad) if ``slope``."""
    out = [
        ParamRange("pole_mass", "body_mass:pole", mass[0], mass[1], "scale"),
        ParamRange("pole_length", "body_length:pole", length[0], length[1], "scale"),
        ParamRange("cart_damping", "dof_damping:slider", damping[0], damping[1], "absolute"),
        ParamRange("motor_gain", "actuator_gain:motor", gain[0], gain[1], "scale"),
    ]
    if bias:
        out.append(ParamRange("motor_bias", "actuator_bias:motor", -bias, bias, "absolute"))
    if slope:
        out.append(ParamRange("slope", "gravity_tilt", -slope, slope, "absolute"))
    return tuple(out)


# The task's own overrides and their defaults (see the module docstring).
DESIGN_DEFAULTS = {
    "slope": 0.2,
    "bias": 0.0,
    "mass_range": (0.5, 2.0),
    "length_range": (0.6, 1.4),
    "gain_range": (0.8, 1.2),
    "damping_range": (0.0, 1.0),
    "teacher_state": False,
    "teacher_velocities": True,
}
# The stack's settings for the task: a 32-row history (1.28 s) that only the student reads.
STACK = {"episode_length": 250, "noise_std": 0.01, "history_length": 32, "history_for_teacher": False}

# Episodes start at rest (pole within ±0.02 rad of the track's normal, speeds within ±0.05): the
# first thing that moves the cart-pole is then the hidden slope itself, which a deployed policy can
# read from its first few rows of history (CartpoleConfig's tilted, moving start hides it behind
# the random initial motion; default_task_cpu.md).
REST_START = {"init_angle": 0.02, "init_vel": 0.05, "init_angvel": 0.05}


def make_cartpole_hidden(**overrides: Any) -> Env:
    """The cart-pole on a hidden slope with its default stack (randomisation incl. the slope ->
    sensor noise 0.01 on ``cart_pos``/``pole_angle`` -> 32-row history, the student's alone ->
    250-step time limit);
    ``overrides``: see the module docstring."""
    from distill_jax.envs.registry import _STACK_DEFAULTS, _check_overrides, wrap_cartpole_task

    config_fields = [f.name for f in dataclasses.fields(CartpoleConfig)]
    _check_overrides("cartpole_hidden", overrides, list(_STACK_DEFAULTS) + config_fields + list(DESIGN_DEFAULTS))
    s = {**_STACK_DEFAULTS, **STACK, **DESIGN_DEFAULTS,
         **{k: v for k, v in overrides.items() if k in _STACK_DEFAULTS or k in DESIGN_DEFAULTS}}
    task_kw = {**REST_START, **{k: v for k, v in overrides.items() if k in config_fields and k != "episode_length"}}
    task = CartpoleHidden(episode_length=s["episode_length"], teacher_state=s["teacher_state"],
                          teacher_velocities=s["teacher_velocities"], **task_kw)
    ranges = hidden_ranges(s["slope"], s["bias"], s["mass_range"], s["length_range"], s["gain_range"], s["damping_range"])
    return wrap_cartpole_task(task, s, ranges if s["randomize"] else None)
