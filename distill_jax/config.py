"""Frozen configuration dataclasses.

Two kinds of settings, kept apart on purpose:

* **static** settings fix shapes or program structure (``num_envs``, ``unroll_length``,
  minibatches, network sizes, the student's kind, whether a loss term exists). Changing one
  compiles a new program. Derived sizes are properties, never written back.
* **traced** float coefficients (each dataclass lists them in ``TRACED``: learning rates,
  clipping, entropy, bound and loss weights, discounting, the β schedule's ends) travel as
  float32 scalars in the train state (:mod:`distill_jax.hyperparams`). Changing one reuses the
  compiled program, and a sweep over them is one more ``vmap`` axis (``RunConfig.sweep``).

``validate`` raises a :class:`ConfigError` naming the field and value for nonsensical settings,
non-finite floats included.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, ClassVar


class ConfigError(ValueError):
    """A configuration value is nonsensical; the message names field and value."""


def _require(cond: bool, field: str, value: Any, why: str) -> None:
    if not cond:
        raise ConfigError(f"{field}={value!r}: {why}")


def _positive_ints(config: Any, prefix: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, f"{prefix}.{name}", value,
                 "must be a positive integer")


def _layer_sizes(sizes: tuple[int, ...], field: str) -> None:
    _require(len(sizes) > 0 and all(isinstance(s, int) and s > 0 for s in sizes), field, sizes,
             "needs one or more positive layer sizes")


def _finite_floats(config: Any, prefix: str) -> None:
    """Every float field of ``config`` (not nested sections) is finite: NaN and ±Inf are refused."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float):
            _require(math.isfinite(value), f"{prefix}.{f.name}" if prefix else f.name, value, "must be a finite number")


def _finite_values(value: Any, field: str) -> None:
    """A free-form value (an env override: a number, a list or a mapping of them) holds no NaN or ±Inf;
    the error names the path down to the offending entry."""
    if isinstance(value, float):
        _require(math.isfinite(value), field, value, "must be a finite number")
    elif isinstance(value, dict):
        for k, v in value.items():
            _finite_values(v, f"{field}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _finite_values(v, f"{field}[{i}]")


ACTIVATIONS = ("tanh", "relu", "elu", "swish")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Hidden layer sizes and activation of the teacher's MLP actor and critic."""

    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (128, 128)
    activation: str = "tanh"
    # > 0: RMA-style teacher actor, privileged fields -> latent of this size -> policy (EncodedTeacher).
    privileged_latent: int = 0
    encoder_hidden: tuple[int, ...] = (64,)

    TRACED: ClassVar[tuple[str, ...]] = ()

    def validate(self, prefix: str = "network") -> None:
        for name in ("actor_hidden", "critic_hidden"):
            _layer_sizes(getattr(self, name), f"{prefix}.{name}")
        _require(self.activation in ACTIVATIONS, f"{prefix}.activation", self.activation,
                 f"must be one of {', '.join(ACTIVATIONS)}")
        _require(isinstance(self.privileged_latent, int) and self.privileged_latent >= 0,
                 f"{prefix}.privileged_latent", self.privileged_latent, "must be a non-negative integer")
        if self.privileged_latent:
            _layer_sizes(self.encoder_hidden, f"{prefix}.encoder_hidden")


ENTROPY_KINDS = ("gaussian", "squashed")  # the keys of distributions.ENTROPIES (config stays jax-free)


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO teacher training hyper-parameters (per seed).

    One *update* collects ``num_envs * unroll_length`` env steps, then runs
    ``num_epochs`` passes of ``num_minibatches`` shuffled minibatches.
    """

    num_envs: int = 256
    unroll_length: int = 32
    num_minibatches: int = 8
    num_epochs: int = 4
    learning_rate: float = 3e-4
    max_grad_norm: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    # Clipping range of the value prediction around the collection-time value (ppo.loss); 0 = off.
    value_clip: float = 0.0
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    # Which entropy the bonus raises (distributions.ENTROPIES): "gaussian" (pre-squash, unbounded in
    # the scale) or "squashed" (of tanh(raw), bounded; stops a small-batch scale runaway).
    entropy: str = "gaussian"
    # Penalty on mean actions beyond |tanh(loc)| = action_bound (ppo.loss): keeps the teacher's
    # targets below the distillation mask's saturation threshold (0.99). 0 = off.
    bound_coef: float = 0.0
    action_bound: float = 0.95
    reward_scale: float = 1.0
    normalize_observations: bool = True
    normalize_advantages: bool = True
    total_env_steps: int = 1_000_000
    # Restart finished envs from a pool of stored initial states, refilled in batches every few steps
    # (VmapAutoReset(reset_pool=True)): cheaper when episodes are short, at the price of reusing states.
    reset_pool: bool = False
    # Anneal the learning rate linearly to 0 over the phase's gradient steps (num_updates x epochs x
    # minibatches): the last policy is then a settled one, not a snapshot of a still-moving curve.
    anneal_lr: bool = False
    network: NetworkConfig = NetworkConfig()

    TRACED: ClassVar[tuple[str, ...]] = (
        "learning_rate", "max_grad_norm", "gamma", "gae_lambda", "clip_eps", "value_clip", "vf_coef", "ent_coef",
        "bound_coef", "action_bound", "reward_scale",
    )

    @property
    def batch_size(self) -> int:
        """Env steps per update (per seed)."""
        return self.num_envs * self.unroll_length

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Updates needed to reach ``total_env_steps`` (rounded up)."""
        return -(-self.total_env_steps // self.batch_size)

    @property
    def anneal_steps(self) -> int:
        """Gradient steps the learning rate anneals over (0: a constant rate)."""
        return self.num_updates * self.num_epochs * self.num_minibatches if self.anneal_lr else 0

    def validate(self, prefix: str = "ppo") -> None:
        _finite_floats(self, prefix)
        _require(isinstance(self.anneal_lr, bool), f"{prefix}.anneal_lr", self.anneal_lr, "must be true or false")
        _positive_ints(self, prefix, ("num_envs", "unroll_length", "num_minibatches", "num_epochs", "total_env_steps"))
        _require(self.batch_size % self.num_minibatches == 0, f"{prefix}.num_minibatches", self.num_minibatches,
                 f"must divide num_envs * unroll_length = {self.batch_size}")
        for name in ("learning_rate", "max_grad_norm", "clip_eps", "reward_scale"):
            _require(getattr(self, name) > 0, f"{prefix}.{name}", getattr(self, name), "must be > 0")
        for name in ("gamma", "gae_lambda"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"{prefix}.{name}", getattr(self, name), "must be in [0, 1]")
        for name in ("vf_coef", "ent_coef", "bound_coef", "value_clip"):
            _require(getattr(self, name) >= 0, f"{prefix}.{name}", getattr(self, name), "must be >= 0")
        _require(0.0 < self.action_bound < 1.0, f"{prefix}.action_bound", self.action_bound, "must be in (0, 1)")
        _require(self.entropy in ENTROPY_KINDS, f"{prefix}.entropy", self.entropy, f"must be one of {ENTROPY_KINDS}")
        self.network.validate(f"{prefix}.network")


OBJECTIVES = ("kl", "mse")
KL_DIRECTIONS = ("reverse", "forward")
BEHAVIOURS = ("teacher", "student", "mixture")
STUDENT_KINDS = ("mlp", "gru")
SCAN_ENCODER_KINDS = ("none", "mlp", "cnn")  # distill.student.scan_encoder
MASK_RULES = ("falls", "timeouts", "resets", "saturated_actions", "nonfinite_teacher")  # distill.masks.RULES' keys
MASK_THRESHOLDS = ("fall_horizon", "saturation")  # the thresholds those rules read
# The rule in force when neither the config nor the env's schema names one.
DEFAULT_MASK_RULE = ("falls", "timeouts", "saturated_actions", "nonfinite_teacher")
DEFAULT_MASK_THRESHOLDS = (("fall_horizon", 1.0), ("saturation", 0.99))


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """What the student minimises on valid teacher steps.

    ``kind="kl"``: ``KL(student || teacher) - ent_coef · H(student)`` (``kl_direction="forward"``:
    ``KL(teacher || student)``); ``kind="mse"``: masked action MSE. ``latent_coef`` weighs the
    RMA-style regression of the teacher's privileged latent (needs ``student.latent_head``).
    """

    kind: str = "kl"
    kl_direction: str = "reverse"
    ent_coef: float = 0.0
    # The student's entropy bonus, as ppo.entropy: "gaussian" (pre-squash) or "squashed" (bounded).
    entropy: str = "gaussian"
    latent_coef: float = 1.0

    TRACED: ClassVar[tuple[str, ...]] = ("ent_coef", "latent_coef")

    def validate(self, prefix: str = "distill.objective") -> None:
        _finite_floats(self, prefix)
        _require(self.kind in OBJECTIVES, f"{prefix}.kind", self.kind, f"must be one of {OBJECTIVES}")
        _require(self.kl_direction in KL_DIRECTIONS, f"{prefix}.kl_direction", self.kl_direction,
                 f"must be one of {KL_DIRECTIONS}")
        _require(self.ent_coef >= 0, f"{prefix}.ent_coef", self.ent_coef, "must be >= 0 (it is a bonus)")
        _require(self.entropy in ENTROPY_KINDS, f"{prefix}.entropy", self.entropy, f"must be one of {ENTROPY_KINDS}")
        _require(self.latent_coef >= 0, f"{prefix}.latent_coef", self.latent_coef, "must be >= 0")


@dataclasses.dataclass(frozen=True)
class BehaviourConfig:
    """Who acts while the student's data is collected.

    ``kind="teacher"``: the student learns on teacher states; ``"student"`` (DAgger): the student
    acts and the teacher relabels every visited state; ``"mixture"``: per env and step the teacher
    acts with probability β, decaying linearly from ``beta_start`` to ``beta_end`` over
    ``beta_decay_updates`` updates.
    """

    kind: str = "student"
    beta_start: float = 1.0
    beta_end: float = 0.0
    beta_decay_updates: int = 10

    TRACED: ClassVar[tuple[str, ...]] = ("beta_start", "beta_end")

    def validate(self, prefix: str = "distill.behaviour") -> None:
        _finite_floats(self, prefix)
        _require(self.kind in BEHAVIOURS, f"{prefix}.kind", self.kind, f"must be one of {BEHAVIOURS}")
        for name in ("beta_start", "beta_end"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"{prefix}.{name}", getattr(self, name), "must be in [0, 1]")
        _positive_ints(self, prefix, ("beta_decay_updates",))


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """The student network, built from the schema's deployable fields (``distill.student``).

    ``fields`` narrows it to a subset of ``student_obs`` (e.g. a memoryless student without
    ``history``); ``latent_head`` adds a head that predicts the teacher's privileged latent
    (MLP students, with a teacher whose ``ppo.network.privileged_latent > 0``).

    ``scan_encoder`` makes the student perceptive: ``"mlp"`` or ``"cnn"`` sends the grid fields
    ``scan_fields`` (e.g. ``height_scan`` ``[nx, ny, 2]``) through a scan encoder (MLP hidden
    widths ``scan_hidden``; CNN 3x3 filters ``scan_channels``) to a ``scan_embedding``-wide
    embedding, concatenated after the other fields before the trunk; ``scan_gate`` adds a
    Miki-2022-style sigmoid belief gate on it. ``"none"`` (default): every field flattened.
    """

    kind: str = "mlp"
    hidden: tuple[int, ...] = (128, 128)
    gru_size: int = 64
    activation: str = "elu"
    fields: tuple[str, ...] | None = None
    latent_head: bool = False
    scan_encoder: str = "none"
    scan_fields: tuple[str, ...] = ("height_scan",)
    scan_hidden: tuple[int, ...] = (64,)
    scan_channels: tuple[int, ...] = (8, 16)
    scan_embedding: int = 32
    scan_gate: bool = False

    TRACED: ClassVar[tuple[str, ...]] = ()

    def validate(self, prefix: str = "distill.student") -> None:
        _require(self.kind in STUDENT_KINDS, f"{prefix}.kind", self.kind, f"must be one of {STUDENT_KINDS}")
        _layer_sizes(self.hidden, f"{prefix}.hidden")
        _positive_ints(self, prefix, ("gru_size",))
        _require(self.activation in ACTIVATIONS, f"{prefix}.activation", self.activation,
                 f"must be one of {', '.join(ACTIVATIONS)}")
        _require(not self.latent_head or self.kind == "mlp", f"{prefix}.latent_head", self.latent_head,
                 "latent matching is implemented for MLP students (distill.student.kind='mlp')")
        _require(self.scan_encoder in SCAN_ENCODER_KINDS, f"{prefix}.scan_encoder", self.scan_encoder,
                 f"must be one of {SCAN_ENCODER_KINDS}")
        _require(len(self.scan_fields) > 0 and all(isinstance(f, str) and f for f in self.scan_fields),
                 f"{prefix}.scan_fields", self.scan_fields, "needs one or more field names")
        _require(self.scan_encoder == "none" or self.fields is None
                 or all(f in self.fields for f in self.scan_fields), f"{prefix}.scan_fields", self.scan_fields,
                 f"a scan encoder reads fields the student has; {prefix}.fields is {self.fields}")
        _layer_sizes(self.scan_hidden, f"{prefix}.scan_hidden")
        _layer_sizes(self.scan_channels, f"{prefix}.scan_channels")
        _positive_ints(self, prefix, ("scan_embedding",))

    def scan_spec(self) -> Any:
        """The :class:`~distill_jax.networks.ScanSpec` of a perceptive student; ``None`` for ``scan_encoder='none'``."""
        if self.scan_encoder == "none":
            return None
        from distill_jax.networks import ScanSpec  # networks imports this module

        return ScanSpec(kind=self.scan_encoder, fields=tuple(self.scan_fields), hidden=tuple(self.scan_hidden),
                        channels=tuple(self.scan_channels), embedding=self.scan_embedding, gate=self.scan_gate)


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """Which teacher steps are never imitation targets (rules of :mod:`distill_jax.distill.masks`).

    ``None`` takes what the env's schema declares, else :data:`DEFAULT_MASK_RULE` /
    :data:`DEFAULT_MASK_THRESHOLDS`; a run records the rule in force in its ``schema.json``.
    """

    rule: tuple[str, ...] | None = None
    thresholds: tuple[tuple[str, float], ...] | None = None

    TRACED: ClassVar[tuple[str, ...]] = ()

    def validate(self, prefix: str = "distill.mask") -> None:
        if self.rule is not None:
            unknown = [r for r in self.rule if r not in MASK_RULES]
            _require(not unknown, f"{prefix}.rule", self.rule, f"unknown rule(s) {unknown}; known {list(MASK_RULES)}")
        if self.thresholds is not None:
            for pair in self.thresholds:
                _require(isinstance(pair, tuple) and len(pair) == 2, f"{prefix}.thresholds", self.thresholds,
                         "must be a list of [name, value] pairs")
                name, value = pair
                _require(name in MASK_THRESHOLDS, f"{prefix}.thresholds", self.thresholds,
                         f"unknown threshold {name!r}; known {list(MASK_THRESHOLDS)}")
                _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                         and value > 0, f"{prefix}.thresholds.{name}", value, "must be a finite number > 0")


@dataclasses.dataclass(frozen=True)
class PPOTermConfig:
    """The optional ``coef · PPO`` term on the student's own rollouts (``distill.ppo_term``).

    Off by default (pure distillation: no rewards are read). When ``enabled`` the student gets an
    asymmetric critic (every field, normalised with the teacher's statistics, training only) and
    its loss adds ``coef · (clipped surrogate + vf_coef · value loss)``.
    """

    enabled: bool = False
    coef: float = 1.0
    clip_eps: float = 0.2
    vf_coef: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    reward_scale: float = 1.0
    critic_hidden: tuple[int, ...] = (128, 128)

    TRACED: ClassVar[tuple[str, ...]] = ("coef", "clip_eps", "vf_coef", "gamma", "gae_lambda", "reward_scale")

    def validate(self, prefix: str = "distill.ppo_term") -> None:
        _finite_floats(self, prefix)
        for name in ("coef", "vf_coef"):
            _require(getattr(self, name) >= 0, f"{prefix}.{name}", getattr(self, name), "must be >= 0")
        for name in ("clip_eps", "reward_scale"):
            _require(getattr(self, name) > 0, f"{prefix}.{name}", getattr(self, name), "must be > 0")
        for name in ("gamma", "gae_lambda"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"{prefix}.{name}", getattr(self, name), "must be in [0, 1]")
        _layer_sizes(self.critic_hidden, f"{prefix}.critic_hidden")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Student distillation: batching and optimiser at the top, one section per concern
    (``objective``, ``behaviour``, ``student``, ``mask``, ``ppo_term``)."""

    num_envs: int = 256
    unroll_length: int = 32
    num_minibatches: int = 4
    num_epochs: int = 2
    learning_rate: float = 1e-3
    max_grad_norm: float = 1.0
    normalize_observations: bool = True
    total_env_steps: int = 200_000
    # Restart finished envs from a pool of stored initial states, refilled in batches every few steps
    # (VmapAutoReset(reset_pool=True)): cheaper when episodes are short, at the price of reusing states.
    reset_pool: bool = False
    # Anneal the learning rate linearly to 0 over the phase's gradient steps (as ppo.anneal_lr): the
    # exported student is then a settled one, not a snapshot of a still-moving DAgger curve.
    anneal_lr: bool = False
    objective: ObjectiveConfig = ObjectiveConfig()
    behaviour: BehaviourConfig = BehaviourConfig()
    student: StudentConfig = StudentConfig()
    mask: MaskConfig = MaskConfig()
    ppo_term: PPOTermConfig = PPOTermConfig()

    TRACED: ClassVar[tuple[str, ...]] = ("learning_rate", "max_grad_norm")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.unroll_length

    @property
    def num_updates(self) -> int:
        return -(-self.total_env_steps // self.batch_size)

    @property
    def anneal_steps(self) -> int:
        """Gradient steps the learning rate anneals over (0: a constant rate)."""
        return self.num_updates * self.num_epochs * self.num_minibatches if self.anneal_lr else 0

    def validate(self, prefix: str = "distill") -> None:
        _finite_floats(self, prefix)
        _require(isinstance(self.anneal_lr, bool), f"{prefix}.anneal_lr", self.anneal_lr, "must be true or false")
        _positive_ints(self, prefix, ("num_envs", "unroll_length", "num_minibatches", "num_epochs", "total_env_steps"))
        # Minibatches split the env axis (whole sequences, so recurrent students can replay them).
        _require(self.num_envs % self.num_minibatches == 0, f"{prefix}.num_minibatches", self.num_minibatches,
                 f"must divide num_envs = {self.num_envs}")
        for name in ("learning_rate", "max_grad_norm"):
            _require(getattr(self, name) > 0, f"{prefix}.{name}", getattr(self, name), "must be > 0")
        for section in ("objective", "behaviour", "student", "mask", "ppo_term"):
            getattr(self, section).validate(f"{prefix}.{section}")
        _require(not self.ppo_term.enabled or self.behaviour.kind == "student", f"{prefix}.ppo_term.enabled",
                 self.ppo_term.enabled, "the PPO term is on-policy for the student: needs "
                 f"distill.behaviour.kind='student', not {self.behaviour.kind!r}")


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """The deployable-only baseline (:mod:`distill_jax.references`): the teacher's PPO, networks and
    settings, its actor reading only ``student_obs``; the reference of the teacher claim.

    ``total_env_steps`` 0 gives it the teacher's and the student's env steps together, the whole
    pipeline's cost: distillation is then compared with direct RL at equal cost, and the teacher
    with a baseline that had more experience than it did.
    """

    enabled: bool = False
    total_env_steps: int = 0

    TRACED: ClassVar[tuple[str, ...]] = ()

    def validate(self, prefix: str = "baseline") -> None:
        _require(isinstance(self.total_env_steps, int) and self.total_env_steps >= 0, f"{prefix}.total_env_steps",
                 self.total_env_steps, "must be a non-negative integer (0: teacher + distillation env steps)")


@dataclasses.dataclass(frozen=True)
class OracleConfig:
    """The oracle student (:mod:`distill_jax.references`): the student's own settings and budget, its
    network also reading the teacher-only fields. Evidence for the diagnosis only, never exported."""

    enabled: bool = False

    TRACED: ClassVar[tuple[str, ...]] = ()


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """The evaluation's perturbation suite (:mod:`distill_jax.suite`): every condition the task
    declares, or those named in ``conditions``, at their declared strengths or at those
    ``strengths`` gives (``(("pole_mass", (1.0, 4.0)),)``). Checked against the task when a run is
    created; a task that declares no suite is evaluated on the nominal panel only."""

    enabled: bool = True
    conditions: tuple[str, ...] = ()
    strengths: tuple[tuple[str, tuple[float, ...]], ...] = ()

    TRACED: ClassVar[tuple[str, ...]] = ()

    @property
    def requested(self) -> bool:
        """Whether the user named conditions or strengths (then a task without a suite is an error)."""
        return bool(self.conditions or self.strengths)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole pipeline run: task, seeds, each phase's settings, and an optional sweep.

    ``sweep`` holds ``(path, values)`` pairs over traced float fields (``"distill.objective.ent_coef"``,
    ``(0.0, 0.01, 0.1)``): the grid is their product, and every grid point is trained with every
    seed, all in one program (:mod:`distill_jax.hyperparams`).
    """

    env: str = "cartpole"
    env_overrides: tuple[tuple[str, Any], ...] = ()
    # Applied over env_overrides for the held-out panel only: a shifted evaluation distribution
    # (e.g. (("noise_std", 0.05),)); empty = the training distribution.
    eval_env_overrides: tuple[tuple[str, Any], ...] = ()
    seed: int = 0
    num_seeds: int = 1
    eval_episodes: int = 64
    # Iterations per compiled call (0: about ten calls per phase); a checkpoint is saved after every call.
    updates_per_call: int = 0
    checkpoint_keep: int = 3
    sweep: tuple[tuple[str, tuple[float, ...]], ...] = ()
    ppo: PPOConfig = PPOConfig()
    distill: DistillConfig = DistillConfig()
    baseline: BaselineConfig = BaselineConfig()
    oracle: OracleConfig = OracleConfig()
    suite: SuiteConfig = SuiteConfig()

    TRACED: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        for name, why in (("num_seeds", "must be a positive integer"), ("eval_episodes", "must be a positive integer"),
                          ("checkpoint_keep", "must be a positive integer")):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, name, value, why)
        _require(isinstance(self.env, str) and bool(self.env), "env", self.env, "must be a task name (a string)")
        _require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "must be a non-negative integer")
        _require(isinstance(self.updates_per_call, int) and self.updates_per_call >= 0, "updates_per_call",
                 self.updates_per_call, "must be a non-negative integer (0: automatic)")
        for section in ("env_overrides", "eval_env_overrides"):
            for key, value in getattr(self, section):
                _finite_values(value, f"{section}.{key}")
        self.ppo.validate("ppo")
        self.distill.validate("distill")
        self.baseline.validate("baseline")
        _require(not self.distill.student.latent_head or self.ppo.network.privileged_latent > 0,
                 "distill.student.latent_head", self.distill.student.latent_head,
                 "needs a teacher with a privileged latent (ppo.network.privileged_latent > 0)")
        self._validate_sweep()

    def _validate_sweep(self) -> None:
        seen = set()
        for entry in self.sweep:
            _require(isinstance(entry, tuple) and len(entry) == 2, "sweep", self.sweep,
                     "must be a list of [path, [values]] pairs")
            path, values = entry
            _require(path in traced_paths(self), "sweep", path,
                     f"only traced float fields can be swept; they are {sorted(traced_paths(self))}")
            _require(path not in seen, "sweep", path, "is swept twice")
            seen.add(path)
            _require(isinstance(values, tuple) and len(values) >= 1, f"sweep {path}", values,
                     "needs one or more values")
            for value in values:
                _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                         f"sweep {path}", value, "must be a finite number")
                try:
                    with_value(self, path, float(value)).validate_without_sweep()
                except ConfigError as e:
                    raise ConfigError(f"sweep {path}={value!r}: {e}") from None

    def validate_without_sweep(self) -> None:
        dataclasses.replace(self, sweep=()).validate()

    @property
    def sweep_points(self) -> list[dict[str, float]]:
        """The sweep grid: one ``{path: value}`` per point, the first axis slowest (``[{}]`` without a sweep)."""
        return _grid(self.sweep)

    @property
    def num_members(self) -> int:
        """Students trained (and evaluated): every grid point with every seed."""
        return len(self.sweep_points) * self.num_seeds

    def phase_points(self, section: str) -> list[dict[str, float]]:
        """The grid points a phase trains, with paths relative to its section (``"ppo"`` or ``"distill"``).

        The teacher phase trains the grid of the ``ppo.*`` axes only (a sweep over distillation
        coefficients reuses one teacher per seed); the distillation phase trains the whole grid,
        each point keeping its ``distill.*`` values.
        """
        prefix = f"{section}."
        strip = lambda point: {p[len(prefix):]: v for p, v in point.items() if p.startswith(prefix)}  # noqa: E731
        if section == "ppo":
            return [strip(point) for point in _grid(tuple(e for e in self.sweep if e[0].startswith(prefix)))]
        return [strip(point) for point in self.sweep_points]

    @property
    def baseline_ppo(self) -> PPOConfig:
        """The baseline's PPO settings: the teacher's, with the baseline's budget."""
        steps = self.baseline.total_env_steps or self.ppo.total_env_steps + self.distill.total_env_steps
        return dataclasses.replace(self.ppo, total_env_steps=steps)

    def teacher_members(self) -> list[int]:
        """For each student member ``g * K + k`` (the whole grid), the teacher member it learns from."""
        teacher_grid = _grid(tuple(e for e in self.sweep if e[0].startswith("ppo.")))
        index = []
        for point in self.sweep_points:
            own = {p: v for p, v in point.items() if p.startswith("ppo.")}
            index += [teacher_grid.index(own) * self.num_seeds + k for k in range(self.num_seeds)]
        return index


def _grid(sweep: tuple[tuple[str, tuple[float, ...]], ...]) -> list[dict[str, float]]:
    paths = [path for path, _ in sweep]
    return [dict(zip(paths, map(float, values))) for values in itertools.product(*(v for _, v in sweep))]


def traced_paths(config: Any, prefix: str = "") -> tuple[str, ...]:
    """The dotted paths of every traced float field of ``config`` (nested sections included)."""
    paths = [f"{prefix}{name}" for name in getattr(config, "TRACED", ())]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            paths += traced_paths(value, f"{prefix}{f.name}.")
    return tuple(paths)


def with_value(config: Any, path: str, value: Any) -> Any:
    """``config`` with the field at dotted ``path`` replaced by ``value`` (no coercion)."""
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: with_value(getattr(config, head), rest, value)})


def get_value(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


def to_dict(config: Any) -> Any:
    """A JSON-able dict of a (nested) config dataclass."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple):
        return [to_dict(v) for v in config]
    return config


# Fields that moved when DistillConfig was nested by concern: named in the error for an old config.
MOVED_FIELDS = {
    "distill.student_kind": "distill.student.kind", "distill.student_hidden": "distill.student.hidden",
    "distill.gru_size": "distill.student.gru_size", "distill.student_activation": "distill.student.activation",
    "distill.student_fields": "distill.student.fields", "distill.kl_direction": "distill.objective.kl_direction",
    "distill.ent_coef": "distill.objective.ent_coef", "distill.entropy": "distill.objective.entropy",
    "distill.latent_coef": "distill.objective.latent_coef (with distill.student.latent_head=true)",
    "distill.beta_start": "distill.behaviour.beta_start", "distill.beta_end": "distill.behaviour.beta_end",
    "distill.beta_decay_updates": "distill.behaviour.beta_decay_updates",
    "distill.mask_rule": "distill.mask.rule", "distill.mask_thresholds": "distill.mask.thresholds",
    "distill.ppo_coef": "distill.ppo_term.coef (with distill.ppo_term.enabled=true)",
    "distill.ppo_clip_eps": "distill.ppo_term.clip_eps", "distill.ppo_vf_coef": "distill.ppo_term.vf_coef",
    "distill.gamma": "distill.ppo_term.gamma", "distill.gae_lambda": "distill.ppo_term.gae_lambda",
    "distill.reward_scale": "distill.ppo_term.reward_scale", "distill.critic_hidden": "distill.ppo_term.critic_hidden",
}
# Old string-valued fields that are sections now.
MOVED_SECTIONS = {"distill.objective": "distill.objective.kind", "distill.behaviour": "distill.behaviour.kind"}


def _coerce(value: Any, like: Any, path: str) -> Any:
    """Converts a parsed JSON/CLI ``value`` to the type of the default ``like``."""
    if dataclasses.is_dataclass(like):
        if not isinstance(value, dict):
            moved = f" (it moved to {MOVED_SECTIONS[path]})" if path in MOVED_SECTIONS else ""
            raise ConfigError(f"{path}={value!r}: expected a mapping of {type(like).__name__} fields{moved}")
        return replace_fields(like, value, path)
    if isinstance(like, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if not isinstance(value, bool):
            raise ConfigError(f"{path}={value!r}: expected true/false")
        return value
    if isinstance(like, int) and not isinstance(like, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{path}={value!r}: expected an integer")
        return value
    if isinstance(like, float):
        if isinstance(value, str):  # JSON has no NaN/Infinity literals that json.loads would not already take
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{path}={value!r}: expected a number") from None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}={value!r}: expected a number")
        if not math.isfinite(value):
            raise ConfigError(f"{path}={value!r}: must be a finite number")
        return float(value)
    if isinstance(like, tuple) or (like is None and isinstance(value, list)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r}: expected a list")
        return tuple(_freeze(v) for v in value)
    return value


def _freeze(value: Any) -> Any:
    """Lists (from JSON) as tuples, nested ones too, so configs stay hashable."""
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


def replace_fields(config: Any, updates: dict[str, Any], path: str = "") -> Any:
    """``config`` with ``updates`` (nested dicts) applied; unknown fields raise naming them."""
    names = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, value in updates.items():
        full = f"{path}.{key}" if path else key
        if key not in names:
            moved = f" (it moved to {MOVED_FIELDS[full]})" if full in MOVED_FIELDS else ""
            raise ConfigError(f"unknown config field {full!r}{moved}; valid fields here: {sorted(names)}")
        changes[key] = _coerce(value, getattr(config, key), full)
    return dataclasses.replace(config, **changes)


def parse_assignment(assignment: str, flag: str = "--set") -> tuple[list[str], Any]:
    """``"a.b=value"`` -> ``(["a", "b"], value)``; the value is parsed as JSON when it can be."""
    import json

    if "=" not in assignment:
        raise ConfigError(f"{flag} {assignment!r} must look like section.field=value")
    path, raw = assignment.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path.strip().split("."), value


def apply_override(config: Any, assignment: str) -> Any:
    """Applies one ``dotted.path=value`` override; the value is parsed as JSON when it can be."""
    parts, value = parse_assignment(assignment)
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    return replace_fields(config, nested)


def parse_sweep(assignment: str) -> tuple[str, tuple[float, ...]]:
    """``"distill.objective.ent_coef=0,0.01,0.1"`` -> ``("distill.objective.ent_coef", (0.0, 0.01, 0.1))``."""
    if "=" not in assignment:
        raise ConfigError(f"--sweep {assignment!r} must look like section.field=v1,v2,...")
    path, raw = assignment.split("=", 1)
    values = []
    for item in raw.split(","):
        try:
            value = float(item)
        except ValueError:
            raise ConfigError(f"--sweep {path.strip()}: {item.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"--sweep {path.strip()}: {item.strip()!r} must be a finite number")
        values.append(value)
    return path.strip(), tuple(values)
