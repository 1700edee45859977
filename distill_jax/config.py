"""Frozen configuration dataclasses.

Sizes that fix array shapes (``num_envs``, ``unroll_length``, minibatches…) are
static; derived sizes are properties, never written back. ``validate`` raises a
``ConfigError`` naming the field and value for nonsensical settings.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A configuration value is nonsensical; the message names field and value."""


def _require(cond: bool, field: str, value: Any, why: str) -> None:
    if not cond:
        raise ConfigError(f"{field}={value!r}: {why}")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Hidden layer sizes and activation of the MLP actor and critic."""

    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (128, 128)
    activation: str = "tanh"
    # > 0: RMA-style teacher actor, privileged fields -> latent of this size -> policy (EncodedTeacher).
    privileged_latent: int = 0
    encoder_hidden: tuple[int, ...] = (64,)

    def validate(self, prefix: str = "network") -> None:
        for name in ("actor_hidden", "critic_hidden"):
            sizes = getattr(self, name)
            _require(len(sizes) > 0 and all(int(s) > 0 for s in sizes), f"{prefix}.{name}", sizes,
                     "needs one or more positive layer sizes")
        _require(self.activation in ("tanh", "relu", "elu", "swish"), f"{prefix}.activation",
                 self.activation, "must be one of tanh, relu, elu, swish")
        _require(isinstance(self.privileged_latent, int) and self.privileged_latent >= 0,
                 f"{prefix}.privileged_latent", self.privileged_latent, "must be a non-negative integer")


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
    network: NetworkConfig = NetworkConfig()

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

    def validate(self, prefix: str = "ppo") -> None:
        for name in ("num_envs", "unroll_length", "num_minibatches", "num_epochs", "total_env_steps"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value > 0, f"{prefix}.{name}", value, "must be a positive integer")
        _require(self.batch_size % self.num_minibatches == 0, f"{prefix}.num_minibatches", self.num_minibatches,
                 f"must divide num_envs * unroll_length = {self.batch_size}")
        for name in ("learning_rate", "max_grad_norm", "clip_eps", "reward_scale"):
            value = getattr(self, name)
            _require(value > 0, f"{prefix}.{name}", value, "must be > 0")
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"{prefix}.{name}", value, "must be in [0, 1]")
        for name in ("vf_coef", "ent_coef", "bound_coef"):
            value = getattr(self, name)
            _require(value >= 0, f"{prefix}.{name}", value, "must be >= 0")
        _require(0.0 < self.action_bound < 1.0, f"{prefix}.action_bound", self.action_bound, "must be in (0, 1)")
        _require(self.entropy in ENTROPY_KINDS, f"{prefix}.entropy", self.entropy, f"must be one of {ENTROPY_KINDS}")
        self.network.validate(f"{prefix}.network")


BEHAVIOURS = ("teacher", "student", "mixture")
ENTROPY_KINDS = ("gaussian", "squashed")  # the keys of distributions.ENTROPIES (config stays jax-free)
OBJECTIVES = ("kl", "mse")
STUDENT_KINDS = ("mlp", "gru")
MASK_RULES = ("falls", "timeouts", "resets", "saturated_actions", "nonfinite_teacher")  # distill.masks.RULES' keys


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Student distillation hyper-parameters.

    ``behaviour`` picks who acts while collecting: ``"teacher"`` (the student
    learns on teacher states), ``"student"`` (DAgger: the student acts and the
    teacher relabels every visited state) or ``"mixture"`` (per env and step
    the teacher acts with probability β, decaying linearly from
    ``beta_start`` to ``beta_end`` over ``beta_decay_updates`` updates).
    """

    num_envs: int = 256
    unroll_length: int = 32
    num_minibatches: int = 4
    num_epochs: int = 2
    learning_rate: float = 1e-3
    max_grad_norm: float = 1.0
    objective: str = "kl"
    kl_direction: str = "reverse"
    ent_coef: float = 0.0
    # The student's entropy bonus, as ppo.entropy: "gaussian" (pre-squash) or "squashed" (bounded).
    entropy: str = "gaussian"
    behaviour: str = "student"
    beta_start: float = 1.0
    beta_end: float = 0.0
    beta_decay_updates: int = 10
    mask_rule: tuple[str, ...] = ("falls", "timeouts", "saturated_actions", "nonfinite_teacher")
    mask_thresholds: tuple[tuple[str, float], ...] = (("fall_horizon", 1.0), ("saturation", 0.99))
    student_kind: str = "mlp"
    student_hidden: tuple[int, ...] = (128, 128)
    gru_size: int = 64
    student_activation: str = "elu"
    student_fields: tuple[str, ...] | None = None
    normalize_observations: bool = True
    # Optional λ·PPO on the student's own rollouts (λ = ppo_coef; 0 = pure distillation, no
    # rewards read). Its critic is asymmetric: it reads every field, normalised with the
    # teacher's statistics, and exists only during training.
    ppo_coef: float = 0.0
    ppo_clip_eps: float = 0.2
    ppo_vf_coef: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    reward_scale: float = 1.0
    critic_hidden: tuple[int, ...] = (128, 128)
    # Auxiliary RMA-style feature matching: weight of the masked regression of the teacher's
    # privileged latent by the student (needs ppo.network.privileged_latent > 0, an MLP student).
    latent_coef: float = 0.0
    total_env_steps: int = 200_000
    # Restart finished envs from a pool of stored initial states, refilled in batches every few steps
    # (VmapAutoReset(reset_pool=True)): cheaper when episodes are short, at the price of reusing states.
    reset_pool: bool = False

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.unroll_length

    @property
    def num_updates(self) -> int:
        return -(-self.total_env_steps // self.batch_size)

    def validate(self, prefix: str = "distill") -> None:
        for name in ("num_envs", "unroll_length", "num_minibatches", "num_epochs", "total_env_steps",
                     "gru_size", "beta_decay_updates"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value > 0, f"{prefix}.{name}", value, "must be a positive integer")
        # Minibatches split the env axis (whole sequences, so recurrent students can replay them).
        _require(self.num_envs % self.num_minibatches == 0, f"{prefix}.num_minibatches", self.num_minibatches,
                 f"must divide num_envs = {self.num_envs}")
        _require(self.learning_rate > 0, f"{prefix}.learning_rate", self.learning_rate, "must be > 0")
        _require(self.max_grad_norm > 0, f"{prefix}.max_grad_norm", self.max_grad_norm, "must be > 0")
        _require(self.ent_coef >= 0, f"{prefix}.ent_coef", self.ent_coef, "must be >= 0 (it is a bonus)")
        _require(self.entropy in ENTROPY_KINDS, f"{prefix}.entropy", self.entropy, f"must be one of {ENTROPY_KINDS}")
        _require(self.objective in OBJECTIVES, f"{prefix}.objective", self.objective, f"must be one of {OBJECTIVES}")
        _require(self.kl_direction in ("reverse", "forward"), f"{prefix}.kl_direction", self.kl_direction,
                 "must be 'reverse' or 'forward'")
        _require(self.behaviour in BEHAVIOURS, f"{prefix}.behaviour", self.behaviour, f"must be one of {BEHAVIOURS}")
        for name in ("beta_start", "beta_end"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"{prefix}.{name}", value, "must be in [0, 1]")
        _require(self.student_kind in STUDENT_KINDS, f"{prefix}.student_kind", self.student_kind,
                 f"must be one of {STUDENT_KINDS}")
        _require(len(self.student_hidden) > 0 and all(h > 0 for h in self.student_hidden),
                 f"{prefix}.student_hidden", self.student_hidden, "needs one or more positive layer sizes")
        _require(self.ppo_coef >= 0, f"{prefix}.ppo_coef", self.ppo_coef, "must be >= 0 (0: pure distillation)")
        _require(self.ppo_coef == 0 or self.behaviour == "student", f"{prefix}.ppo_coef", self.ppo_coef,
                 f"the PPO term is on-policy for the student: needs behaviour='student', not {self.behaviour!r}")
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"{prefix}.{name}", value, "must be in [0, 1]")
        _require(self.ppo_clip_eps > 0, f"{prefix}.ppo_clip_eps", self.ppo_clip_eps, "must be > 0")
        _require(self.latent_coef >= 0, f"{prefix}.latent_coef", self.latent_coef, "must be >= 0")
        _require(self.latent_coef == 0 or self.student_kind == "mlp", f"{prefix}.latent_coef", self.latent_coef,
                 "latent matching is implemented for MLP students (student_kind='mlp')")
        _require(len(self.critic_hidden) > 0 and all(h > 0 for h in self.critic_hidden),
                 f"{prefix}.critic_hidden", self.critic_hidden, "needs one or more positive layer sizes")
        unknown = [r for r in self.mask_rule if r not in MASK_RULES]
        _require(not unknown, f"{prefix}.mask_rule", self.mask_rule, f"unknown rule(s) {unknown}; known {list(MASK_RULES)}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole pipeline run: task, seeds, and each phase's settings."""

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
    ppo: PPOConfig = PPOConfig()
    distill: DistillConfig = DistillConfig()

    def validate(self) -> None:
        _require(isinstance(self.num_seeds, int) and self.num_seeds > 0, "num_seeds", self.num_seeds,
                 "must be a positive integer")
        _require(isinstance(self.eval_episodes, int) and self.eval_episodes > 0, "eval_episodes",
                 self.eval_episodes, "must be a positive integer")
        _require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "must be a non-negative integer")
        _require(isinstance(self.updates_per_call, int) and self.updates_per_call >= 0, "updates_per_call",
                 self.updates_per_call, "must be a non-negative integer (0: automatic)")
        _require(isinstance(self.checkpoint_keep, int) and self.checkpoint_keep > 0, "checkpoint_keep",
                 self.checkpoint_keep, "must be a positive integer")
        self.ppo.validate("ppo")
        self.distill.validate("distill")
        _require(self.distill.latent_coef == 0 or self.ppo.network.privileged_latent > 0, "distill.latent_coef",
                 self.distill.latent_coef, "needs a teacher with a privileged latent (ppo.network.privileged_latent > 0)")


def to_dict(config: Any) -> Any:
    """A JSON-able dict of a (nested) config dataclass."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple):
        return [to_dict(v) for v in config]
    return config


def _coerce(value: Any, like: Any, path: str) -> Any:
    """Converts a parsed JSON/CLI ``value`` to the type of the default ``like``."""
    if dataclasses.is_dataclass(like):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}={value!r}: expected a mapping of {type(like).__name__} fields")
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
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}={value!r}: expected a number")
        return float(value)
    if isinstance(like, tuple) or (like is None and isinstance(value, list)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r}: expected a list")
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def replace_fields(config: Any, updates: dict[str, Any], path: str = "") -> Any:
    """``config`` with ``updates`` (nested dicts) applied; unknown fields raise naming them."""
    names = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, value in updates.items():
        full = f"{path}.{key}" if path else key
        if key not in names:
            raise ConfigError(f"unknown config field {full!r}; valid fields here: {sorted(names)}")
        changes[key] = _coerce(value, getattr(config, key), full)
    return dataclasses.replace(config, **changes)


def apply_override(config: Any, assignment: str) -> Any:
    """Applies one ``dotted.path=value`` override; the value is parsed as JSON when it can be."""
    import json

    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.field=value")
    path, raw = assignment.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    nested: Any = value
    for part in reversed(path.strip().split(".")):
        nested = {part: nested}
    return replace_fields(config, nested)
