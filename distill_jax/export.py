"""The deployable student as a self-contained artifact: StableHLO + arrays + schema.

:func:`export_student` serialises the student's *deterministic* inference
function with ``jax.export`` (batch size symbolic) and writes, in one
directory:

* ``student.stablehlo`` — the serialised program ``(variables, carry, obs,
  first) -> (carry, action)``; normalisation is inside it;
* ``variables.npz`` — the parameters and normaliser statistics it takes,
  keyed by pytree path (plain arrays, loaded with ``allow_pickle=False``);
* ``schema.json`` — the student's observation schema (what it may read);
* ``manifest.json`` — format version, input specs, action size, memory size, the history layout.

:func:`export_onnx` writes the same deterministic student as ``student.onnx`` beside it, for
runtimes without JAX: the graph is built by :mod:`distill_jax.deploy.onnx_graph` (which says why
by hand) and carries its :class:`~distill_jax.deploy.contract.DeployContract` (inputs, history
layout, noise, latency, control period, action mapping) in its metadata;
:func:`deploy_contract` gathers that contract from the env.

:class:`DeployedStudent` loads that directory without pickle and without the
training code, admits an observation dict only through the schema's student
guard (a privileged field is rejected by name), checks shapes, dtypes and
finiteness, and returns the same actions as the in-process student.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from distill_jax import normalization
from distill_jax.deploy.contract import ACTION_OUTPUT, CARRY_INPUT, CARRY_OUTPUT, ONNX_FILE, DeployContract
from distill_jax.deploy.onnx_graph import Normalizer, ScanLayout, build_student_graph
from distill_jax.deploy.runtime import OnnxStudent, open_session
from distill_jax.envs.base import Wrapper
from distill_jax.envs.wrappers import ActionLatency, ObservationHistory, SensorNoise, TimeLimit
from distill_jax.evaluate import eval_wrapper
from distill_jax.schema import ObservationSchema, SchemaError

EXPORT_FORMAT_VERSION = 1
PROGRAM_FILE, VARIABLES_FILE, SCHEMA_FILE, MANIFEST_FILE = (
    "student.stablehlo", "variables.npz", "schema.json", "manifest.json"
)


def scan_layout(student: Any) -> ScanLayout | None:
    """The graph builder's view of ``student``'s scan encoders (``None``: a blind student)."""
    spec = getattr(student.module, "scan", None)
    return None if spec is None else ScanLayout(spec.kind, tuple(spec.fields), bool(spec.gate))


class ExportError(RuntimeError):
    """An export directory is missing files or was written by another format version."""


def _flatten(tree: Any) -> tuple[dict[str, np.ndarray], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}, treedef


def inference_fn(student: Any, treedef: Any, names: list[str]):
    """``(flat_variables, carry, obs, first) -> (carry, action)`` with ``action = tanh(loc)``.

    ``names`` lists the paths in ``treedef``'s leaf order. ``flat_variables`` maps pytree paths to arrays (``{"params", "obs_stats"}``
    flattened) so the exported signature holds only dicts, arrays and ``None``.
    """

    def infer(flat_variables, carry, obs, first):
        variables = jax.tree_util.tree_unflatten(treedef, [flat_variables[n] for n in names])
        obs = student.schema.guard_student(obs)
        if variables["obs_stats"] is not None:
            obs = normalization.normalize(variables["obs_stats"], obs)
        carry, dist = student.step(variables["params"], carry, obs, first)
        return carry, jnp.tanh(dist.loc)

    return infer


def export_student(directory: pathlib.Path | str, student: Any, params: Any, obs_stats: Any,
                   env: Any = None) -> pathlib.Path:
    """Writes the deployable student (one seed's ``params``/``obs_stats``) to ``directory``.

    With the single-instance ``env`` the manifest also describes the ``history`` field's layout
    (rows, their fields and sizes, order, fill; :func:`deploy_contract`), else ``history`` is ``null``.

    Returns:
      ``directory``.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat, treedef = _flatten({"params": params, "obs_stats": obs_stats})
    names = list(flat)  # pytree flatten order, which unflatten expects
    specs = student.schema.field_specs
    (batch,) = jax.export.symbolic_shape("batch")
    obs_spec = {
        name: jax.ShapeDtypeStruct((batch, *specs[name].shape), jnp.dtype(specs[name].dtype))
        for name in student.schema.student_obs
    }
    carry = student.initial_carry(1)
    carry_spec = jax.tree.map(lambda c: jax.ShapeDtypeStruct((batch, *c.shape[1:]), c.dtype), carry)
    var_spec = {n: jax.ShapeDtypeStruct(flat[n].shape, flat[n].dtype) for n in names}
    exported = jax.export.export(jax.jit(inference_fn(student, treedef, names)))(
        var_spec, carry_spec, obs_spec, jax.ShapeDtypeStruct((batch,), jnp.float32)
    )
    (directory / PROGRAM_FILE).write_bytes(exported.serialize())
    np.savez(directory / VARIABLES_FILE, **flat)
    (directory / SCHEMA_FILE).write_text(student.schema.to_json())
    manifest = {
        "format_version": EXPORT_FORMAT_VERSION,
        "kind": student.kind,
        "inputs": {n: {"shape": list(specs[n].shape), "dtype": specs[n].dtype} for n in student.schema.student_obs},
        "carry_size": None if carry is None else int(np.prod(carry.shape[1:])),
        "action_size": int(exported.out_avals[-1].shape[-1]),  # flat outputs: carry leaves, then action
        "action_range": [-1.0, 1.0],
        "variables": names,
        "history": None if env is None else deploy_contract(env, student).history,
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return directory


class DeployedStudent:
    """The exported student, loaded without pickle or training code.

    Use ``actions = student(obs)`` for a feed-forward student, or
    ``carry, actions = student.step(carry, obs, first)`` with
    ``carry = student.initial_carry(batch)`` for a recurrent one. ``obs`` maps
    each deployable field to an array ``[batch, *shape]`` (or ``[*shape]`` for
    one observation).
    """

    def __init__(self, directory: pathlib.Path | str):
        self.directory = pathlib.Path(directory)
        missing = [f for f in (PROGRAM_FILE, VARIABLES_FILE, SCHEMA_FILE, MANIFEST_FILE)
                   if not (self.directory / f).is_file()]
        if missing:
            raise ExportError(f"{self.directory}: not an exported student, missing {missing}")
        self.manifest = json.loads((self.directory / MANIFEST_FILE).read_text())
        version = self.manifest.get("format_version")
        if version != EXPORT_FORMAT_VERSION:
            raise ExportError(f"{self.directory}: export format {version!r}, this loader reads {EXPORT_FORMAT_VERSION}")
        self.schema = ObservationSchema.from_json((self.directory / SCHEMA_FILE).read_text())
        with np.load(self.directory / VARIABLES_FILE, allow_pickle=False) as data:
            self.variables = {name: jnp.asarray(data[name]) for name in self.manifest["variables"]}
        self._exported = jax.export.deserialize(bytearray((self.directory / PROGRAM_FILE).read_bytes()))
        # Jitted once: a bare Exported.call re-lowers on every call (1.4-3.9 ms a step on one core,
        # against 60-180 us jitted; experiments/results/deploy_cpu.md).
        self._call = jax.jit(self._exported.call)
        self.action_size = int(self.manifest["action_size"])
        self.recurrent = self.manifest["carry_size"] is not None

    def initial_carry(self, batch: int) -> jax.Array | None:
        """Zero memory ``[batch, carry_size]`` (``None`` for a feed-forward student)."""
        return None if not self.recurrent else jnp.zeros((batch, self.manifest["carry_size"]), jnp.float32)

    def check_obs(self, obs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
        """Validates ``obs``; returns it batched and whether a batch axis was added.

        Raises:
          PrivilegedFieldError / UnknownFieldError / MissingFieldError: by field name.
          SchemaError: wrong shape, dtype, or non-finite values, naming the field.
        """
        if not isinstance(obs, Mapping):
            raise SchemaError(f"observation must be a dict of named fields, got {type(obs).__name__}")
        obs = self.schema.guard_student(obs)
        arrays, batch_shapes = {}, set()
        for name, spec in self.manifest["inputs"].items():
            value = obs[name]
            # A list or tuple of Python numbers is taken as the field's dtype (NumPy would read float64).
            value = np.asarray(value, spec["dtype"]) if isinstance(value, (list, tuple)) else np.asarray(value)
            shape, rank = tuple(spec["shape"]), len(spec["shape"])
            if value.dtype != np.dtype(spec["dtype"]):
                raise SchemaError(f"field {name!r} has dtype {value.dtype}; expected {spec['dtype']}")
            if value.shape[value.ndim - rank:] != shape or value.ndim not in (rank, rank + 1):
                raise SchemaError(
                    f"field {name!r} has shape {value.shape}; expected {shape} or (batch, {', '.join(map(str, shape))})"
                )
            if not np.isfinite(value).all():
                raise SchemaError(f"field {name!r} contains NaN or Inf")
            arrays[name] = value
            batch_shapes.add(value.shape[: value.ndim - rank])
        if len(batch_shapes) > 1:
            raise SchemaError(f"fields disagree on the batch shape: {sorted(batch_shapes)}")
        unbatched = batch_shapes == {()}
        if unbatched:
            arrays = {n: v[None] for n, v in arrays.items()}
        return arrays, unbatched

    def step(self, carry: Any, obs: Mapping[str, Any], first: Any = None) -> tuple[Any, jax.Array]:
        """One control step: ``(carry, actions [batch, action_size])``.

        ``first`` (``[batch]``, 1.0 where an episode starts) resets a recurrent
        student's memory; default all ones when ``carry`` is ``None``.
        """
        arrays, unbatched = self.check_obs(obs)
        batch = next(iter(arrays.values())).shape[0]
        if self.recurrent and carry is None:
            carry = self.initial_carry(batch)
            first = np.ones((batch,), np.float32) if first is None else first
        first = np.zeros((batch,), np.float32) if first is None else np.asarray(first, np.float32).reshape(batch)
        carry, actions = self._call(self.variables, carry, arrays, first)
        return carry, (actions[0] if unbatched else actions)

    def __call__(self, obs: Mapping[str, Any]) -> jax.Array:
        """Deterministic actions in [-1, 1] for a feed-forward student.

        Raises:
          TypeError: the student is recurrent; without its carry every call would start from
            empty memory (use :meth:`step`).
        """
        if self.recurrent:
            self.check_obs(obs)  # a privileged or malformed field is named first
            raise TypeError(
                f"this student is recurrent ({self.manifest['kind']}, memory of {self.manifest['carry_size']} numbers): "
                "student(obs) would start from empty memory at every call; keep its memory with "
                "carry = student.initial_carry(batch), then carry, actions = student.step(carry, obs, first)")
        return self.step(None, obs)[1]


def load_student(directory: pathlib.Path | str) -> DeployedStudent:
    """Loads an exported student (see :class:`DeployedStudent`)."""
    return DeployedStudent(directory)


# ------------------------------------------------------------------------------------ ONNX
# What each deployable field holds, for the people who build it on a robot (the envs' docstring
# tables, in a deployer's words). A field missing here is described by its name only.
FIELD_MEANINGS = {
    "cartpole": {
        "cart_pos": "cart position x along the rail (m), with sensor noise",
        "pole_angle": "(cos θ, sin θ) of the pole angle θ from upright (θ > 0 tilts the tip towards +x), "
                      "with sensor noise on both numbers",
        "last_action": "the action applied at the previous control step, clipped to [-1, 1] (0 at an episode start)",
    },
    "quadruped_rough": {
        "joint_pos": "joint angles minus action.default_pose (rad), in action.joint_names order, with sensor noise",
        "joint_vel": "joint velocities (rad/s), joint_names order, with sensor noise",
        "base_ang_vel": "trunk angular velocity in the trunk frame (rad/s), with sensor noise",
        "projected_gravity": "unit gravity vector in the trunk frame, with sensor noise",
        "command": "velocity command (vx m/s, vy m/s, yaw rate rad/s) in the trunk frame",
        "last_action": "the previous action (before scaling)",
    },
}


FIELD_MEANINGS["cartpole_hidden"] = FIELD_MEANINGS["cartpole"]  # the same sensors, on a hidden slope


def unwrap(env: Any) -> tuple[list[Any], Any]:
    """``(wrappers outermost first, the task)`` of a single-instance env."""
    chain = []
    while isinstance(env, Wrapper):
        chain.append(env)
        env = env.env
    return chain, env


def _action_contract(task: Any, action_size: int) -> dict[str, Any]:
    """How an action reaches the simulator's actuators (``to_ctrl``), per task."""
    out: dict[str, Any] = {"output": ACTION_OUTPUT, "size": int(action_size), "range": [-1.0, 1.0],
                           "deterministic": "tanh of the Gaussian mean"}
    model = getattr(task, "mj_model", None)
    if model is None:
        return {**out, "to_ctrl": None}
    joints = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, int(j)) for j in model.actuator_trnid[:, 0]]
    out.update(joint_names=joints, ctrl_range=np.asarray(model.actuator_ctrlrange).tolist())
    config = getattr(task, "config", None)
    if task.name == "quadruped_rough":
        pose = np.tile(np.asarray(config.default_pose, np.float64), len(joints) // len(config.default_pose))
        out.update(to_ctrl="ctrl = clip(default_pose + action_scale * action, ctrl_range): position-servo "
                           "targets (rad)", default_pose=pose.tolist(), action_scale=float(config.action_scale))
    elif task.name in ("cartpole", "cartpole_hidden"):
        out.update(to_ctrl="ctrl = clip(action, -1, 1): force = gear * ctrl (N)",
                   gear=np.asarray(model.actuator_gear[:, 0]).tolist())
    else:
        out["to_ctrl"] = None  # not described: see the env's documentation
    return out


def deploy_contract(env: Any, student: Any) -> DeployContract:
    """The :class:`~distill_jax.deploy.contract.DeployContract` of ``student`` on the single-instance ``env``.

    Noise, latency and history come from the env's wrapper stack (only those the student's
    fields see); the control period from the task's MuJoCo timestep and substeps.
    """
    chain, task = unwrap(env)
    schema, specs = student.schema, student.schema.field_specs
    fields = list(schema.student_obs)
    meanings = FIELD_MEANINGS.get(task.name, {})
    history = latency = None
    noise: dict[str, float] = {}
    episode_length = None
    for wrapper in chain:
        if isinstance(wrapper, ObservationHistory) and wrapper.obs_field in fields:
            sizes = [{"name": f, "size": int(np.prod(env.schema.field_specs[f].shape))} for f in wrapper.fields]
            if wrapper.include_actions:
                sizes.append({"name": "action", "size": int(env.action_size)})
            history = {
                "field": wrapper.obs_field, "length": wrapper.length, "row": sizes, "row_size": wrapper.row_size,
                "order": "oldest first; the last row is the current step",
                "action": "the action (clipped to [-1, 1]) that led to the row's step; zeros for an episode's "
                          "first step" if wrapper.include_actions else None,
                "fill": wrapper.fill,
                "fill_rule": ("at an episode start every row repeats the first observation with a zero action"
                              if wrapper.fill == "first" else "at an episode start rows before the first are zeros"),
            }
            meanings = {**meanings, wrapper.obs_field: f"the last {wrapper.length} observations of "
                        f"{list(wrapper.fields)}{' and actions' if wrapper.include_actions else ''} (see history)"}
        elif isinstance(wrapper, SensorNoise):
            noise = dict(wrapper.stds)
        elif isinstance(wrapper, ActionLatency):
            latency = {"min_delay": wrapper.min_delay, "max_delay": wrapper.max_delay, "unit": "control steps",
                       "rule": "the command of d steps ago is applied, d uniform per episode; last_action "
                               "reports the applied command, the history the commanded one"}
        elif isinstance(wrapper, TimeLimit):
            episode_length = wrapper.episode_length
    seen = set(fields) | ({r["name"] for r in history["row"]} if history else set())
    carry = None
    if student.kind == "gru":
        carry = {"input": CARRY_INPUT, "output": CARRY_OUTPUT, "shape": [int(student.module.gru_size)],
                 "initial": "zeros at every episode start; afterwards the previous step's carry_out"}
    timestep = float(task.mj_model.opt.timestep) if hasattr(task, "mj_model") else None
    substeps = int(getattr(task, "n_substeps", 1))
    return DeployContract(
        env={"name": task.name, "version": str(task.version), "model_hash": getattr(task, "model_hash", None),
             "episode_length": episode_length},
        kind=student.kind,
        inputs=tuple({"name": f, "shape": list(specs[f].shape), "dtype": specs[f].dtype,
                      "meaning": meanings.get(f, f)} for f in fields),
        privileged_fields=tuple(env.schema.privileged),
        action=_action_contract(task, env.action_size),
        carry=carry,
        history=history,
        noise={"std": {f: s for f, s in noise.items() if f in seen},
               "distribution": "independent N(0, std²) per number, drawn at every step including the reset; "
                               "the history stores the noisy values"},
        latency=latency,
        control={"period_s": float(task.dt) if timestep is not None else None,
                 "physics_timestep_s": timestep, "n_substeps": substeps},
        normalizer={"folded": True, "clip": normalization.DEFAULT_CLIP, "eps": normalization.DEFAULT_EPS},
    )


def export_onnx(directory: pathlib.Path | str, student: Any, params: Any, obs_stats: Any, env: Any) -> pathlib.Path:
    """Writes ``directory/student.onnx``: the deterministic student (one seed's ``params``/``obs_stats``)
    with the normaliser folded in and :func:`deploy_contract` as metadata. Returns the file's path.

    Raises:
      ExportError: the normaliser does not track every student field (the graph folds one
        normaliser over all of them).
    """
    schema = student.schema
    fields = [(name, tuple(schema.field_specs[name].shape)) for name in schema.student_obs]
    normalizer = None
    if obs_stats is not None:
        untracked = [n for n, _ in fields if n not in obs_stats.mean]
        if untracked:
            raise ExportError(f"the normaliser does not track student field(s) {untracked}")
        flat = lambda stats: np.concatenate([np.asarray(stats[n], np.float32).reshape(-1) for n, _ in fields])  # noqa: E731
        normalizer = Normalizer(flat(obs_stats.mean), flat(obs_stats.var), normalization.DEFAULT_CLIP,
                                normalization.DEFAULT_EPS)
    contract = deploy_contract(env, student)
    model = build_student_graph(
        kind=student.kind, activation=student.module.activation, fields=fields,
        params=jax.tree.map(np.asarray, jax.device_get(params)), normalizer=normalizer,
        action_size=env.action_size, metadata=contract.to_metadata_props(), scan=scan_layout(student),
    )
    path = pathlib.Path(directory) / ONNX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


PARITY_TOLERANCE = 1e-5  # max |action difference| accepted between student.onnx and the in-process student


def parity_inputs(obs: Mapping[str, Any], obs_stats: Any, steps: int, seed: int = 7) -> tuple[dict, np.ndarray]:
    """Time-major test inputs ``({field: [T, B, *shape]}, first [T, B])`` grown from real observations.

    Each of the ``B`` observations in ``obs`` (``{field: [B, *shape]}``, e.g. the student's last
    training batch) starts a random walk with steps of 0.3 normaliser standard deviations, so the
    inputs cover the range the student was trained on and reach the normaliser's clip;
    ``first`` restarts env ``b`` at ``t = 0`` and wherever ``t % 10 == b % 10``, so a recurrent
    student's carry is both carried and zeroed.
    """
    rng = np.random.default_rng(seed)
    walks = {}
    for name, value in obs.items():
        value = np.asarray(value, np.float32)
        std = np.ones(value.shape[1:], np.float32) if obs_stats is None else np.sqrt(np.asarray(obs_stats.var[name]))
        steps_ = 0.3 * std * rng.standard_normal((steps, *value.shape)).astype(np.float32)
        walks[name] = value[None] + np.cumsum(steps_, axis=0) - steps_[:1]  # row 0 is the real observation
    t, b = np.meshgrid(np.arange(steps), np.arange(value.shape[0]), indexing="ij")
    first = ((t == 0) | (t % 10 == b % 10)).astype(np.float32)
    return walks, first


def check_onnx(path: pathlib.Path | str, env: Any, student: Any, params: Any, obs_stats: Any,
               obs: Mapping[str, Any], *, min_observations: int = 1000, min_steps: int = 20) -> dict[str, Any]:
    """Parity of ``student.onnx`` with the in-process evaluation wrapper, and its refusal of a privileged field.

    Both act on :func:`parity_inputs` grown from ``obs`` (``{field: [B, *shape]}``) for
    ``T = max(min_steps, ceil(min_observations / B))`` steps: in process as a ``lax.scan`` of
    :func:`~distill_jax.evaluate.eval_wrapper` (a recurrent student's memory reset where
    ``first``), in ONNX Runtime by :meth:`~distill_jax.deploy.runtime.OnnxStudent.actions_over`.
    A synthetic walk instead of an env rollout keeps the check to one small compile (an env
    rollout costs 40 s of compilation on 2 CPU cores).

    Returns:
      ``max_abs_error``, ``observations`` (``T x B``), ``steps``, ``tolerance``, ``passed``,
      ``privileged_field_refused``; or ``{"skipped": reason}`` without onnxruntime.
    """
    try:
        deployed = OnnxStudent(path)
    except ImportError as e:
        return {"skipped": str(e)}
    obs = {name: np.asarray(obs[name]) for name in student.schema.student_obs}
    batch = next(iter(obs.values())).shape[0]
    steps = max(min_steps, -(-min_observations // batch))
    obs_seq, first = parity_inputs(obs, obs_stats, steps)

    @jax.jit
    def in_process(params, obs_stats, obs_seq, first):
        policy = eval_wrapper(student, params, obs_stats)

        def step(carry, xs):
            carry, out = policy(carry, xs[0], xs[1], jax.random.PRNGKey(0))
            return carry, out.action

        return jax.lax.scan(step, student.initial_carry(batch), (obs_seq, first))[1]

    reference = np.asarray(in_process(params, obs_stats, obs_seq, first))
    error = float(np.max(np.abs(deployed.actions_over(obs_seq, first) - reference)))
    privileged = next(iter(env.schema.privileged), None)
    refused = privileged is None
    if privileged is not None:
        feed = {name: value[0] for name, value in obs_seq.items()}
        if deployed.recurrent:
            feed[CARRY_INPUT] = deployed.initial_carry(batch)
        feed[privileged] = np.zeros((batch, *env.schema.field_specs[privileged].shape), np.float32)
        try:
            open_session(path).run(None, feed)
        except Exception:  # onnxruntime's own error type for an input the graph does not declare
            refused = True
    return {"max_abs_error": error, "observations": int(first.size), "steps": steps, "recurrent": deployed.recurrent,
            "tolerance": PARITY_TOLERANCE, "passed": error <= PARITY_TOLERANCE,
            "privileged_field_refused": refused, "privileged_field_tried": privileged}
