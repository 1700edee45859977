"""Actor and critic networks built from the observation schema.

Every network receives the *whole* observation dict (it may hold more fields
than the network may read) and calls ``schema.select(obs, role)`` itself before
its first layer. So the set of inputs is decided by the schema, not by whoever
calls the network: a student actor given the full privileged dict still reads
only ``schema.student_obs``, and a student actor given a dict that lacks a
student field raises :class:`~distill_jax.schema.MissingFieldError`.

Input layout: each selected field ``[*L, *field_shape]`` is flattened to
``[*L, prod(field_shape)]`` (``*L`` = any number of leading batch axes, e.g.
``[]``, ``[B]`` or ``[T, B]``) and the fields are concatenated in the schema's
order (:meth:`ObservationSchema.fields_for`), never in dict order. Per-field
ranks come from the schema's field specs; a field without a spec is taken to be
a vector (rank 1). Observation normalisation is *not* inside the networks; the
policy factory applies :mod:`distill_jax.normalization` first.

Initialisation follows the usual PPO recipe: orthogonal hidden layers with gain
``sqrt(2)``, zero biases, a policy-mean head with gain 0.01 (so the initial
policy is centred at ``tanh(0) = 0``), a value head with gain 1.0. The standard
deviation is a state-dependent head, ``scale = softplus(x) + min_std``
(:func:`distill_jax.distributions.scale_from_raw`), whose bias is set so the
initial scale is ``init_std``.

Networks:

* :class:`Actor` (:func:`make_actor`): MLP actor, role ``"student"`` or
  ``"teacher"``, returns a :class:`~distill_jax.distributions.TanhGaussian`.
* :class:`Critic` (:func:`make_critic`): MLP value function, role ``"critic"``.
* :class:`TeacherNetworks` (:func:`make_teacher_networks`): the teacher's actor
  (or :class:`EncodedTeacher`) and its asymmetric critic, from a ``NetworkConfig``.
* :class:`GRUStudent` (:func:`make_gru_student`): recurrent actor over the
  student fields, stepped one control step at a time; :func:`unroll_gru`
  scans it over a ``[T, B]`` sequence, resetting the memory where ``first``.

Perceptive students: an :class:`Actor` or :class:`GRUStudent` given a
:class:`ScanSpec` sends its grid-shaped fields (e.g. ``height_scan``
``[nx, ny, 2]``) through a :class:`ScanEncoder` (an MLP over the flattened grid,
or a small channels-last CNN) and concatenates the embeddings after the other
fields (flattened as above, schema order) before the trunk. Without a spec
(``scan=None``) the network, its parameter tree and its outputs are unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.config import NetworkConfig
from distill_jax.distributions import DEFAULT_MIN_STD, TanhGaussian, raw_for_scale, scale_from_raw
from distill_jax.schema import ObservationSchema, Role, SchemaError

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": jax.nn.gelu,
}

ACTOR_ROLES: tuple[Role, ...] = ("student", "teacher")

_HIDDEN_GAIN = math.sqrt(2.0)
_POLICY_GAIN = 0.01
_VALUE_GAIN = 1.0


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


def _spec_shape(schema: ObservationSchema, name: str) -> tuple[int, ...] | None:
    spec = schema.field_specs.get(name)
    return None if spec is None else spec.shape


def flatten_obs(schema: ObservationSchema, obs: Mapping[str, jax.Array], role: Role) -> jax.Array:
    """Selects ``role``'s fields from ``obs`` and concatenates them into one vector.

    Args:
      schema: the observation schema.
      obs: ``{field: [*L, *field_shape]}``; may hold fields ``role`` may not
        read (they are dropped).
      role: ``"student"``, ``"teacher"`` or ``"critic"``.

    Returns:
      ``[*L, F]`` float32, ``F = sum over role's fields of prod(field_shape)``,
      fields in schema order.

    Raises:
      MissingFieldError: a field of ``role`` is absent from ``obs``.
      SchemaError: a field's trailing shape differs from its spec, or the
        fields' leading batch shapes disagree.
    """
    return flatten_fields(schema, schema.select(obs, role))


def flatten_fields(schema: ObservationSchema, selected: Mapping[str, jax.Array]) -> jax.Array:
    """Concatenates already-selected fields ``{field: [*L, *field_shape]}`` into ``[*L, F]`` (dict order)."""
    parts = []
    lead_shape = None
    for name, value in selected.items():
        x = jnp.asarray(value)
        spec_shape = _spec_shape(schema, name)
        if spec_shape is None:  # no spec: a vector field
            if x.ndim < 1:
                raise SchemaError(f"field {name!r} is a scalar but has no FieldSpec; give it a spec")
            spec_shape = x.shape[-1:]
        rank = len(spec_shape)
        if x.ndim < rank or tuple(x.shape[x.ndim - rank :]) != tuple(spec_shape):
            raise SchemaError(f"field {name!r} has shape {x.shape}; expected (..., *{spec_shape})")
        lead = tuple(x.shape[: x.ndim - rank])
        if lead_shape is None:
            lead_shape = lead
        elif lead != lead_shape:
            raise SchemaError(
                f"field {name!r} has batch shape {lead} but earlier fields have {lead_shape}"
            )
        size = math.prod(spec_shape)
        parts.append(jnp.reshape(x, lead + (size,)).astype(jnp.float32))
    return jnp.concatenate(parts, axis=-1)


def input_size(schema: ObservationSchema, role: Role) -> int:
    """Length ``F`` of :func:`flatten_obs`'s output for ``role`` (needs field specs)."""
    specs = schema.field_specs
    names = schema.fields_for(role)
    missing = [n for n in names if n not in specs]
    if missing:
        raise SchemaError(f"schema has no FieldSpec for {missing}; cannot compute the input size")
    return sum(math.prod(specs[n].shape) for n in names)


class MLP(nn.Module):
    """Hidden layers only: ``[..., F] -> [..., hidden[-1]]`` (identity if ``hidden`` is empty)."""

    hidden: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        for i, width in enumerate(self.hidden):
            x = nn.Dense(
                width,
                kernel_init=nn.initializers.orthogonal(_HIDDEN_GAIN),
                bias_init=nn.initializers.zeros,
                name=f"hidden_{i}",
            )(x)
            x = act(x)
        return x


SCAN_ENCODERS: tuple[str, ...] = ("mlp", "cnn")


@dataclasses.dataclass(frozen=True)
class ScanSpec:
    """Which grid fields a perceptive student encodes, and how (hashable: a flax module attribute).

    ``kind``: ``"mlp"`` (hidden layers ``hidden`` over the flattened grid) or ``"cnn"`` (3x3
    convolutions with ``channels`` filters, stride 1, SAME padding, channels last; a rank-2 grid
    gets one channel). Either ends in a ``Dense(embedding)`` with the network's activation.
    ``gate``: a Miki-2022-style belief gate, ``embedding * sigmoid(Dense([other fields, embedding]))``,
    so the student can learn to discount the scan when proprioception disagrees with it.
    """

    kind: str = "cnn"
    fields: tuple[str, ...] = ("height_scan",)
    hidden: tuple[int, ...] = (64,)
    channels: tuple[int, ...] = (8, 16)
    embedding: int = 32
    gate: bool = False


def check_scan_spec(schema: ObservationSchema, role: Role, scan: ScanSpec) -> None:
    """Refuses a spec whose fields the role cannot read or whose shapes the encoder cannot take."""
    if scan.kind not in SCAN_ENCODERS:
        raise ValueError(f"scan encoder kind {scan.kind!r}; expected one of {SCAN_ENCODERS}")
    if not scan.fields:
        raise SchemaError("a scan encoder needs one or more scan fields")
    readable = schema.fields_for(role)
    for name in scan.fields:
        if name not in readable:
            raise SchemaError(f"scan field {name!r} is not one of the {role}'s fields {list(readable)}")
        shape = _spec_shape(schema, name)
        if shape is None or len(shape) < 2:
            raise SchemaError(f"scan field {name!r} has shape {shape}; a scan encoder needs a grid (rank >= 2)")
        if scan.kind == "cnn" and len(shape) > 3:
            raise SchemaError(f"scan field {name!r} has shape {shape}; the CNN takes [H, W] or [H, W, C]")


class ScanEncoder(nn.Module):
    """One grid field ``[*L, *grid_shape]`` -> embedding ``[*L, spec.embedding]``."""

    spec: ScanSpec
    grid_shape: tuple[int, ...]
    activation: str = "elu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        rank = len(self.grid_shape)
        lead = tuple(x.shape[: x.ndim - rank])
        if self.spec.kind == "mlp":
            h = MLP(tuple(self.spec.hidden), self.activation, name="mlp")(jnp.reshape(x, lead + (-1,)))
        else:
            image = x if rank == 3 else x[..., None]
            h = jnp.reshape(image, (-1, *image.shape[-3:]))  # [N, H, W, C]
            for i, channels in enumerate(self.spec.channels):
                h = nn.Conv(channels, (3, 3), padding="SAME", kernel_init=nn.initializers.orthogonal(_HIDDEN_GAIN),
                            bias_init=nn.initializers.zeros, name=f"conv_{i}")(h)
                h = act(h)
            h = jnp.reshape(h, lead + (-1,))
        return act(nn.Dense(self.spec.embedding, kernel_init=nn.initializers.orthogonal(_HIDDEN_GAIN),
                            bias_init=nn.initializers.zeros, name="embed")(h))


def actor_input(schema: ObservationSchema, obs: Mapping[str, jax.Array], role: Role,
                scan: ScanSpec | None, activation: str) -> jax.Array:
    """The trunk's input ``[*L, F]``: :func:`flatten_obs` without ``scan``; with it, the other fields
    flattened (schema order) then each scan field's embedding (``scan.fields`` order).

    Call inside a module's compact ``__call__``: the encoders (``scan_<field>``) and the gate
    (``scan_gate``) become its submodules.
    """
    if scan is None:
        return flatten_obs(schema, obs, role)
    selected = schema.select(obs, role)
    others = {n: v for n, v in selected.items() if n not in scan.fields}
    parts = [flatten_fields(schema, others)] if others else []
    embeddings = []
    for name in scan.fields:
        grid = flatten_fields(schema, {name: selected[name]})  # checks the trailing shape against the spec
        grid_shape = _spec_shape(schema, name)
        grid = jnp.reshape(grid, grid.shape[:-1] + tuple(grid_shape))
        embeddings.append(ScanEncoder(scan, tuple(grid_shape), activation, name=f"scan_{name}")(grid))
    embedding = jnp.concatenate(embeddings, axis=-1)
    if scan.gate:
        context = jnp.concatenate(parts + [embedding], axis=-1)
        gate = nn.Dense(embedding.shape[-1], kernel_init=nn.initializers.orthogonal(1.0),
                        bias_init=nn.initializers.zeros, name="scan_gate")(context)
        embedding = embedding * jax.nn.sigmoid(gate)
    return jnp.concatenate(parts + [embedding], axis=-1)


class GaussianHead(nn.Module):
    """Maps features ``[..., H]`` to a :class:`TanhGaussian` over ``action_size`` actions."""

    action_size: int
    min_std: float = DEFAULT_MIN_STD
    init_std: float = 1.0

    @nn.compact
    def __call__(self, h: jax.Array) -> TanhGaussian:
        loc = nn.Dense(
            self.action_size,
            kernel_init=nn.initializers.orthogonal(_POLICY_GAIN),
            bias_init=nn.initializers.zeros,
            name="loc",
        )(h)
        raw_scale = nn.Dense(
            self.action_size,
            kernel_init=nn.initializers.orthogonal(_POLICY_GAIN),
            bias_init=nn.initializers.constant(raw_for_scale(self.init_std, self.min_std)),
            name="scale",
        )(h)
        return TanhGaussian(loc=loc, scale=scale_from_raw(raw_scale, self.min_std))


def _check_actor_role(role: str) -> None:
    if role not in ACTOR_ROLES:
        raise SchemaError(f"an actor's role must be one of {ACTOR_ROLES}, got {role!r}")


class Actor(nn.Module):
    """MLP actor reading exactly ``schema.fields_for(role)``.

    ``__call__(obs)``: ``obs`` is ``{field: [*L, *field_shape]}`` (extra fields
    are ignored); returns a :class:`TanhGaussian` with ``[*L, action_size]``
    parameters.
    """

    schema: ObservationSchema
    role: Role
    action_size: int
    hidden: Sequence[int] = (256, 256)
    activation: str = "tanh"
    min_std: float = DEFAULT_MIN_STD
    init_std: float = 1.0
    latent_size: int = 0  # > 0: also predicts a teacher latent from the torso features
    scan: ScanSpec | None = None  # a perceptive actor: grid fields through a ScanEncoder

    @nn.compact
    def __call__(self, obs: Mapping[str, jax.Array]) -> TanhGaussian:
        _check_actor_role(self.role)
        x = actor_input(self.schema, obs, self.role, self.scan, self.activation)
        h = MLP(tuple(self.hidden), self.activation, name="torso")(x)
        if self.latent_size:
            # Sown, not returned: acting code is unchanged, training reads it with mutable=["intermediates"].
            self.sow("intermediates", "latent", nn.Dense(self.latent_size, name="latent_head")(h))
        return GaussianHead(self.action_size, self.min_std, self.init_std, name="head")(h)


class EncodedTeacher(nn.Module):
    """RMA-style teacher actor: privileged fields -> latent ``z``; policy on (deployable fields, ``z``).

    :meth:`encode` reads only ``schema.teacher_only`` and returns ``z`` ``[*L, latent_size]``;
    ``__call__`` reads ``schema.student_obs`` and ``z``. A student can then regress
    ``z`` from its own (deployable) inputs (:func:`distill_jax.distill.losses.latent_matching_loss`).
    """

    schema: ObservationSchema
    action_size: int
    latent_size: int
    hidden: Sequence[int] = (256, 256)
    encoder_hidden: Sequence[int] = (64,)
    activation: str = "tanh"
    min_std: float = DEFAULT_MIN_STD
    init_std: float = 1.0

    def setup(self):
        self.encoder = MLP(tuple(self.encoder_hidden), self.activation)
        self.to_latent = nn.Dense(self.latent_size, kernel_init=nn.initializers.orthogonal(1.0),
                                  bias_init=nn.initializers.zeros)
        self.torso = MLP(tuple(self.hidden), self.activation)
        self.head = GaussianHead(self.action_size, self.min_std, self.init_std)

    def encode(self, obs: Mapping[str, jax.Array]) -> jax.Array:
        readable = self.schema.select(obs, "teacher")  # MissingFieldError names any absent field
        privileged = {name: readable[name] for name in self.schema.teacher_only}
        return self.to_latent(self.encoder(flatten_fields(self.schema, privileged)))

    def __call__(self, obs: Mapping[str, jax.Array]) -> TanhGaussian:
        x = flatten_obs(self.schema, obs, "student")
        h = self.torso(jnp.concatenate([x, self.encode(obs)], axis=-1))
        return self.head(h)


class Critic(nn.Module):
    """MLP value function reading ``schema.fields_for(role)`` (default ``"critic"``).

    ``__call__(obs)``: ``obs`` is ``{field: [*L, *field_shape]}``; returns values ``[*L]``.
    """

    schema: ObservationSchema
    hidden: Sequence[int] = (256, 256)
    activation: str = "tanh"
    role: Role = "critic"

    @nn.compact
    def __call__(self, obs: Mapping[str, jax.Array]) -> jax.Array:
        x = flatten_obs(self.schema, obs, self.role)
        h = MLP(tuple(self.hidden), self.activation, name="torso")(x)
        v = nn.Dense(
            1,
            kernel_init=nn.initializers.orthogonal(_VALUE_GAIN),
            bias_init=nn.initializers.zeros,
            name="value",
        )(h)
        return v[..., 0]


class GRUStudent(nn.Module):
    """Recurrent actor: encoder MLP -> GRU cell -> head MLP -> TanhGaussian.

    Reads ``schema.fields_for(role)`` (default the student fields).

    ``__call__(carry, obs, reset_mask) -> (new_carry, dist)`` advances one
    control step:

    * ``carry``: ``[*L, gru_size]`` memory from the previous step
      (:meth:`initial_carry` at the start).
    * ``obs``: ``{field: [*L, *field_shape]}``.
    * ``reset_mask``: ``[*L]``, 1 where ``obs`` is the first observation of an
      episode; the carry is zeroed there *before* reading ``obs``.
    * ``new_carry``: ``[*L, gru_size]``; ``dist``: ``[*L, action_size]`` parameters.
    """

    schema: ObservationSchema
    action_size: int
    role: Role = "student"
    encoder: Sequence[int] = (256,)
    gru_size: int = 256
    head: Sequence[int] = (256,)
    activation: str = "elu"
    min_std: float = DEFAULT_MIN_STD
    init_std: float = 1.0
    scan: ScanSpec | None = None  # a perceptive student: grid fields through a ScanEncoder

    @nn.compact
    def __call__(
        self, carry: jax.Array, obs: Mapping[str, jax.Array], reset_mask: jax.Array
    ) -> tuple[jax.Array, TanhGaussian]:
        _check_actor_role(self.role)
        keep = 1.0 - jnp.asarray(reset_mask, carry.dtype)
        carry = carry * keep[..., None]
        x = actor_input(self.schema, obs, self.role, self.scan, self.activation)
        x = MLP(tuple(self.encoder), self.activation, name="encoder")(x)
        carry, y = nn.GRUCell(self.gru_size, name="gru")(carry, x)
        h = MLP(tuple(self.head), self.activation, name="head_mlp")(y)
        dist = GaussianHead(self.action_size, self.min_std, self.init_std, name="head")(h)
        return carry, dist

    def initial_carry(self, batch_shape: Sequence[int] = ()) -> jax.Array:
        """Zero memory ``[*batch_shape, gru_size]``; callable on an unbound module."""
        return jnp.zeros((*tuple(batch_shape), self.gru_size), jnp.float32)


def unroll_gru(
    module: GRUStudent,
    params: Any,
    carry: jax.Array,
    obs_seq: Mapping[str, jax.Array],
    first: jax.Array,
) -> tuple[jax.Array, TanhGaussian]:
    """Runs a :class:`GRUStudent` over a time-major sequence with ``lax.scan``.

    Fields the module may not read are dropped before the scan.

    Args:
      module: the recurrent actor.
      params: its variables (``module.init(...)``).
      carry: ``[B, gru_size]`` memory before step 0 (any batch shape ``[*L]``).
      obs_seq: ``{field: [T, B, *field_shape]}``.
      first: ``[T, B]``, 1 where ``obs_seq[t]`` starts an episode; the memory is
        reset there (step 0 included, so stale carries are discarded).

    Returns:
      ``(final_carry [B, gru_size], dists)`` with ``dists`` parameters ``[T, B, A]``.
    """
    obs_seq = module.schema.select(obs_seq, module.role)

    def step(c, xs):
        obs_t, first_t = xs
        return module.apply(params, c, obs_t, first_t)

    return jax.lax.scan(step, carry, (obs_seq, first))


def make_actor(
    schema: ObservationSchema,
    role: Role,
    action_size: int,
    hidden: Sequence[int] = (256, 256),
    activation: str = "tanh",
    min_std: float = DEFAULT_MIN_STD,
    init_std: float = 1.0,
    latent_size: int = 0,
    scan: ScanSpec | None = None,
) -> Actor:
    """An MLP :class:`Actor` for ``role`` (``"teacher"`` or ``"student"``).

    Args:
      schema: decides which fields the actor reads.
      role: ``"teacher"`` (student + teacher-only fields) or ``"student"``.
      action_size: number of action dimensions ``A``.
      hidden: hidden layer widths.
      activation: a key of :data:`ACTIVATIONS`.
      min_std: lower bound of the pre-squash standard deviation.
      init_std: pre-squash standard deviation at initialisation.
      latent_size: > 0 adds a head predicting a teacher latent ``[*L, latent_size]``
        (sown as ``intermediates/latent``).
      scan: a perceptive actor's scan encoder (:class:`ScanSpec`); ``None``: every field flattened.
    """
    _check_actor_role(role)
    _activation(activation)
    if scan is not None:
        check_scan_spec(schema, role, scan)
    return Actor(
        schema=schema,
        role=role,
        action_size=int(action_size),
        hidden=tuple(int(h) for h in hidden),
        activation=activation,
        min_std=float(min_std),
        init_std=float(init_std),
        latent_size=int(latent_size),
        scan=scan,
    )


def make_critic(
    schema: ObservationSchema,
    hidden: Sequence[int] = (256, 256),
    activation: str = "tanh",
    role: Role = "critic",
) -> Critic:
    """An MLP :class:`Critic`; by default it reads every field (asymmetric critic)."""
    schema.fields_for(role)  # validates the role
    _activation(activation)
    return Critic(
        schema=schema, hidden=tuple(int(h) for h in hidden), activation=activation, role=role
    )


def make_gru_student(
    schema: ObservationSchema,
    action_size: int,
    encoder: Sequence[int] = (256,),
    gru_size: int = 256,
    head: Sequence[int] = (256,),
    activation: str = "elu",
    min_std: float = DEFAULT_MIN_STD,
    init_std: float = 1.0,
    role: Role = "student",
    scan: ScanSpec | None = None,
) -> GRUStudent:
    """A recurrent :class:`GRUStudent` over ``role``'s fields (default the student's); ``scan`` as
    in :func:`make_actor`."""
    _check_actor_role(role)
    _activation(activation)
    if scan is not None:
        check_scan_spec(schema, role, scan)
    return GRUStudent(
        schema=schema,
        action_size=int(action_size),
        role=role,
        encoder=tuple(int(h) for h in encoder),
        gru_size=int(gru_size),
        head=tuple(int(h) for h in head),
        activation=activation,
        min_std=float(min_std),
        init_std=float(init_std),
        scan=scan,
    )


__all__ = [
    "ACTIVATIONS",
    "ACTOR_ROLES",
    "Actor",
    "Critic",
    "GRUStudent",
    "GaussianHead",
    "MLP",
    "SCAN_ENCODERS",
    "ScanEncoder",
    "ScanSpec",
    "actor_input",
    "check_scan_spec",
    "flatten_obs",
    "input_size",
    "make_actor",
    "make_critic",
    "EncodedTeacher",
    "flatten_fields",
    "make_gru_student",
    "unroll_gru",
]


class TeacherNetworks(NamedTuple):
    """The flax modules of an asymmetric actor-critic built from one schema."""

    actor: Any  # reads schema.fields_for("teacher")
    critic: Any  # reads schema.fields_for("critic")


def make_teacher_networks(schema: ObservationSchema, action_size: int, network: NetworkConfig) -> TeacherNetworks:
    """The teacher's actor (an :class:`EncodedTeacher` when ``network.privileged_latent > 0``, else an
    :class:`Actor`) and its asymmetric :class:`Critic`, as ``network`` describes them."""
    if network.privileged_latent:
        actor = EncodedTeacher(schema=schema, action_size=int(action_size), latent_size=network.privileged_latent,
                               hidden=tuple(network.actor_hidden), encoder_hidden=tuple(network.encoder_hidden),
                               activation=network.activation)
    else:
        actor = make_actor(schema, "teacher", action_size, hidden=network.actor_hidden, activation=network.activation)
    return TeacherNetworks(actor=actor,
                           critic=make_critic(schema, hidden=network.critic_hidden, activation=network.activation))
