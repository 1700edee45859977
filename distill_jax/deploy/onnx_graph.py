"""The student's deterministic inference as an ONNX graph, written node by node with ``onnx.helper``.

Why by hand rather than a converter: ``jax2onnx`` pins ``orbax-checkpoint<0.11.37`` while this
project needs 0.12, so the two cannot be installed together; the other route, ``jax2tf`` then
``tf2onnx``, would pull TensorFlow into the export. The student's math is small and fixed, and
written out here it is explicit enough to audit against :mod:`distill_jax.networks`:

* **inputs** — one graph input per student field, named after it, ``[batch, *field_shape]``
  float32 (so a privileged field has no input to be fed through); a recurrent student adds
  ``carry`` ``[batch, gru_size]``, a *required* input;
* **layout** — each field flattened to ``[batch, prod(shape)]`` and concatenated in schema order
  (:func:`distill_jax.networks.flatten_fields`);
* **normaliser** (folded into the graph) — ``clip((x - mean) / sqrt(var + eps), -clip, clip)``
  (:func:`distill_jax.normalization.normalize`); ``sqrt(var + eps)`` is precomputed in float32,
  where add and sqrt are correctly rounded, so it equals the value JAX computes;
* **MLP student** — ``torso`` Dense+activation layers, then ``action = tanh(head/loc)``;
* **GRU student** — ``encoder`` layers, a flax ``GRUCell`` (``r = σ(x W_ir + b_ir + h W_hr)``,
  ``z = σ(x W_iz + b_iz + h W_hz)``, ``n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))``,
  ``h' = (1 - z) ⊙ n + z ⊙ h``), ``head_mlp`` layers, ``action = tanh(head/loc)``, and
  ``carry_out = h'``. The in-process student zeroes its memory where an episode starts; here
  the caller does (feeds zeros as ``carry`` at an episode's first step).
* **perceptive student** (a scan encoder, :class:`ScanLayout`) — after the normaliser, the
  trunk's input is the other fields (schema order) then each grid field's embedding: an MLP over
  the flattened grid, or 3x3 convolutions (channels last in JAX, transposed to ONNX's channels
  first and back), then ``embed`` Dense+activation; a belief gate multiplies the embeddings by
  ``sigmoid(Dense([others, embeddings]))``.

Only NumPy and ``onnx`` are imported; the parameters arrive as nested dicts of arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from distill_jax.deploy.contract import ACTION_OUTPUT, CARRY_INPUT, CARRY_OUTPUT

OPSET = 17  # widely supported (ONNX Runtime >= 1.13); nothing here needs a newer operator
IR_VERSION = 8  # the IR version that opset 17 shipped with, so older runtimes load the file
ACTIVATIONS = ("tanh", "elu", "relu", "silu", "swish", "gelu")


class Normalizer(NamedTuple):
    """Observation normaliser statistics in the flattened input layout.

    Attributes:
      mean: ``[F]`` float32 running mean.
      var: ``[F]`` float32 running population variance.
      clip: symmetric bound on normalised values (``None``: no clipping).
      eps: added to ``var`` before the square root.
    """

    mean: np.ndarray  # [F]
    var: np.ndarray  # [F]
    clip: float | None
    eps: float


class _Graph:
    """Accumulates nodes and constant tensors under unique names."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._ints: set[str] = set()
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, array: Any) -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def const_int(self, hint: str, values: Sequence[int]) -> str:
        """An int64 constant (shapes, slice bounds), shared by name when equal."""
        name = f"{hint}_i64_{'_'.join(str(int(v)).replace('-', 'm') for v in values)}"
        if name not in self._ints:
            self._ints.add(name)
            self.initializers.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], output: str | None = None, **attrs: Any) -> str:
        output = output or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output


def _dense(g: _Graph, x: str, layer: Mapping[str, np.ndarray], hint: str) -> str:
    """``x @ kernel + bias`` (flax ``Dense``: kernel ``[in, out]``; the bias may be absent)."""
    y = g.op("MatMul", [x, g.const(f"{hint}/kernel", layer["kernel"])])
    return g.op("Add", [y, g.const(f"{hint}/bias", layer["bias"])]) if "bias" in layer else y


def _activate(g: _Graph, x: str, name: str) -> str:
    """The activations of :data:`distill_jax.networks.ACTIVATIONS`, as JAX defines them."""
    if name == "tanh":
        return g.op("Tanh", [x])
    if name == "relu":
        return g.op("Relu", [x])
    if name == "elu":  # jax.nn.elu: x if x > 0 else expm1(x)
        return g.op("Elu", [x], alpha=1.0)
    if name in ("silu", "swish"):
        return g.op("Mul", [x, g.op("Sigmoid", [x])])
    if name == "gelu":  # jax.nn.gelu's default tanh approximation (ONNX's Gelu op needs opset 20)
        cube = g.op("Mul", [g.op("Mul", [x, x]), x])
        inner = g.op("Mul", [g.op("Add", [x, g.op("Mul", [cube, g.const("c", 0.044715)])]),
                             g.const("k", math.sqrt(2.0 / math.pi))])
        one_plus = g.op("Add", [g.const("one", 1.0), g.op("Tanh", [inner])])
        return g.op("Mul", [g.op("Mul", [x, g.const("half", 0.5)]), one_plus])
    raise ValueError(f"activation {name!r} has no ONNX translation; expected one of {ACTIVATIONS}")


def _mlp(g: _Graph, x: str, layers: Mapping[str, Mapping[str, np.ndarray]], activation: str, hint: str) -> str:
    """flax ``MLP``: ``hidden_0``, ``hidden_1``, ... each Dense then the activation."""
    for i in range(len(layers)):
        x = _activate(g, _dense(g, x, layers[f"hidden_{i}"], f"{hint}/hidden_{i}"), activation)
    return x


def _gru_cell(g: _Graph, x: str, h: str, cell: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """flax ``GRUCell``: the new memory ``h'`` (see the module docstring)."""
    r = g.op("Sigmoid", [g.op("Add", [_dense(g, x, cell["ir"], "gru/ir"), _dense(g, h, cell["hr"], "gru/hr")])])
    z = g.op("Sigmoid", [g.op("Add", [_dense(g, x, cell["iz"], "gru/iz"), _dense(g, h, cell["hz"], "gru/hz")])])
    n = g.op("Tanh", [g.op("Add", [_dense(g, x, cell["in"], "gru/in"),
                                   g.op("Mul", [r, _dense(g, h, cell["hn"], "gru/hn")])])])
    keep_new = g.op("Mul", [g.op("Sub", [g.const("one", 1.0), z]), n])
    return g.op("Add", [keep_new, g.op("Mul", [z, h])], output=CARRY_OUTPUT)


class ScanLayout(NamedTuple):
    """A perceptive student's scan encoders (:class:`distill_jax.networks.ScanSpec`'s graph-relevant part).

    Attributes:
      kind: ``"mlp"`` or ``"cnn"``.
      fields: the grid fields, in the order their embeddings are concatenated.
      gate: whether a belief gate scales the embeddings.
    """

    kind: str
    fields: tuple[str, ...]
    gate: bool


def _scan_embedding(g: _Graph, x: str, shape: tuple[int, ...], layout: ScanLayout,
                    p: Mapping[str, Any], activation: str, hint: str) -> str:
    """flax ``ScanEncoder``: one normalised, flattened grid field ``[batch, prod(shape)]`` -> ``[batch, E]``.

    The CNN's layers are flax ``Conv`` (3x3, stride 1, SAME: one cell of zero padding on each side),
    channels last with kernels ``[3, 3, in, out]``; ONNX's ``Conv`` is channels first with
    ``[out, in, 3, 3]``, so the grid is transposed in and back out before the flattening that
    feeds ``embed`` (the row-major ``[H, W, C]`` order the JAX encoder flattens in).
    """
    if layout.kind == "mlp":
        h = _mlp(g, x, p["mlp"], activation, f"{hint}/mlp")
    else:
        grid = tuple(int(n) for n in shape) if len(shape) == 3 else (int(shape[0]), int(shape[1]), 1)
        h = g.op("Reshape", [x, g.const_int(f"{hint}/grid_shape", [-1, *grid])])
        h = g.op("Transpose", [h], perm=[0, 3, 1, 2])  # NHWC -> NCHW
        for i in range(len([k for k in p if k.startswith("conv_")])):
            conv = p[f"conv_{i}"]
            weight = np.transpose(np.asarray(conv["kernel"], np.float32), (3, 2, 0, 1))
            h = g.op("Conv", [h, g.const(f"{hint}/conv_{i}/kernel", weight), g.const(f"{hint}/conv_{i}/bias",
                                                                                 conv["bias"])],
                     kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
            h = _activate(g, h, activation)
        h = g.op("Flatten", [g.op("Transpose", [h], perm=[0, 2, 3, 1])], axis=1)  # back to NHWC, then [batch, H*W*C]
    return _activate(g, _dense(g, h, p["embed"], f"{hint}/embed"), activation)


def _trunk_input(g: _Graph, x: str, fields: Sequence[tuple[str, tuple[int, ...]]], scan: ScanLayout,
                 p: Mapping[str, Any], activation: str) -> str:
    """:func:`distill_jax.networks.actor_input` with a scan: the other fields (schema order), then each
    scan field's embedding, gated by ``sigmoid(Dense([others, embeddings]))`` where ``scan.gate``."""
    sizes = [int(np.prod(shape, dtype=np.int64)) for _, shape in fields]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    part = {name: g.op("Slice", [x, g.const_int(f"{name}/start", [offsets[i]]),
                                 g.const_int(f"{name}/end", [offsets[i + 1]]), g.const_int("axis1", [1])])
            for i, (name, _) in enumerate(fields)}
    shapes = dict(fields)
    others = [part[name] for name, _ in fields if name not in scan.fields]
    embeddings = [_scan_embedding(g, part[name], shapes[name], scan, p[f"scan_{name}"], activation, f"scan_{name}")
                  for name in scan.fields]
    embedding = embeddings[0] if len(embeddings) == 1 else g.op("Concat", embeddings, axis=1)
    if scan.gate:
        context = g.op("Concat", [*others, embedding], axis=1)
        embedding = g.op("Mul", [embedding, g.op("Sigmoid", [_dense(g, context, p["scan_gate"], "scan_gate")])])
    return g.op("Concat", [*others, embedding], axis=1) if others else embedding


def build_student_graph(
    *,
    kind: str,
    activation: str,
    fields: Sequence[tuple[str, tuple[int, ...]]],
    params: Mapping[str, Any],
    normalizer: Normalizer | None,
    action_size: int,
    metadata: Mapping[str, str],
    scan: ScanLayout | None = None,
) -> onnx.ModelProto:
    """The student's ``obs -> action`` step as a checked ONNX model.

    Args:
      kind: ``"mlp"`` (:class:`distill_jax.networks.Actor`) or ``"gru"``
        (:class:`distill_jax.networks.GRUStudent`).
      activation: the network's hidden activation (a key of :data:`ACTIVATIONS`).
      fields: ``(name, per-step shape)`` of each student field, in schema order.
      params: the flax variables ``{"params": {...}}`` as NumPy arrays.
      normalizer: statistics over the flattened fields, or ``None`` for raw inputs.
      action_size: ``A``.
      metadata: ``metadata_props`` to store (:meth:`DeployContract.to_metadata_props`).
      scan: a perceptive student's scan encoders (``None``: every field flattened into the trunk).

    Returns:
      A model with inputs ``fields`` (``[batch, *shape]`` float32; plus ``carry``
      ``[batch, H]`` for a GRU) and outputs ``action`` ``[batch, A]`` in [-1, 1] (plus
      ``carry_out`` ``[batch, H]``).
    """
    p = params["params"]
    g = _Graph()
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape]) for name, shape in fields]
    flat = [g.op("Flatten", [name], axis=1) for name, _ in fields]
    x = flat[0] if len(flat) == 1 else g.op("Concat", flat, axis=1)
    if normalizer is not None:
        denom = np.sqrt(np.asarray(normalizer.var, np.float32) + np.float32(normalizer.eps))
        x = g.op("Div", [g.op("Sub", [x, g.const("obs_mean", normalizer.mean)]), g.const("obs_std", denom)])
        if normalizer.clip is not None:
            x = g.op("Clip", [x, g.const("clip_low", -normalizer.clip), g.const("clip_high", normalizer.clip)])
    if scan is not None:
        x = _trunk_input(g, x, fields, scan, p, activation)
    outputs = [helper.make_tensor_value_info(ACTION_OUTPUT, TensorProto.FLOAT, ["batch", int(action_size)])]
    if kind == "mlp":
        features = _mlp(g, x, p["torso"], activation, "torso")
    elif kind == "gru":
        gru_size = int(np.shape(p["gru"]["hr"]["kernel"])[0])
        inputs.append(helper.make_tensor_value_info(CARRY_INPUT, TensorProto.FLOAT, ["batch", gru_size]))
        outputs.append(helper.make_tensor_value_info(CARRY_OUTPUT, TensorProto.FLOAT, ["batch", gru_size]))
        new_carry = _gru_cell(g, _mlp(g, x, p["encoder"], activation, "encoder"), CARRY_INPUT, p["gru"])
        features = _mlp(g, new_carry, p["head_mlp"], activation, "head_mlp")
    else:
        raise ValueError(f"unknown student kind {kind!r}; expected 'mlp' or 'gru'")
    g.op("Tanh", [_dense(g, features, p["head"]["loc"], "head/loc")], output=ACTION_OUTPUT)
    graph = helper.make_graph(g.nodes, f"distill_jax_{kind}_student", inputs, outputs, g.initializers,
                              doc_string="deterministic student: action = tanh(mean), normaliser inside")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="distill_jax")
    model.ir_version = IR_VERSION
    helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model, full_check=True)
    return model
