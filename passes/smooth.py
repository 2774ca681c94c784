"""``smooth``: SmoothQuant (Xiao et al., 2023), activation outliers moved into the weights.

For a linear layer ``y = x @ W`` (W [K, N]) and any s > 0 per input channel,
``y = (x / s) @ (diag(s) W)``: exact in real arithmetic, float rounding aside. Choosing

    s_j = max|x_j|^alpha / max|W_j,:|^(1 - alpha)

(max|x_j| over the calibration data, per input channel j) evens out the channels of x
whose range is far wider than the rest, so per-tensor int8 activations lose less, while
the per-output-channel int8 weights absorb the factor. Rules:

1. The linears: MatMul with a constant 2-D float32 weight, Gemm (transA=0) with a constant
   B (transB honoured); 1x1 Conv is not handled. Linears reading the same activation
   (Q, K and V) form one group and share one s, from the max over all their weights.
2. Weights: rows of every linear of the group multiplied by s (a copy when the
   initializer also feeds something else).
3. The activation is divided by s where something can absorb it, when the group's
   linears are its only readers: the scale (and bias) of the LayerNormalization /
   SkipLayerNormalization / RMSNormalization / SimplifiedLayerNormalization producing it,
   the constant of a per-channel Mul producing it, or the output columns (and bias) of the
   MatMul / Gemm (/ MatMul + Add bias) producing it. Otherwise (a residual branch also reads it,
   a GELU produced it) a ``Mul`` by 1/s is inserted before the group; it carries the
   node metadata ``onnxsmith.smooth`` so int8 quantization keeps it in float (quantizing
   its input would bring the outliers back).
4. ``search=true``: alpha chosen per group (smooth_search.py), 0 (left alone) included.
5. Groups are smoothed last first, so a group's s sees its weights as the later groups'
   absorption left them. Idempotent: after smoothing, the same rule gives s = 1
   (max|x'_j| = max|W'_j| at every alpha), and a group whose s is within 0.1% of 1 is
   left alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.measure import Measurements
from onnxsmith.pass_base import Pass, PassResult
from onnxsmith.passes.smooth_search import SAMPLE_ROWS, best_alpha
from onnxsmith.registry import register_pass
from onnxsmith.statistics import AbsMaxRows

__all__ = ["SMOOTH_METADATA", "SmoothPass", "smooth_model", "smoothing_nodes"]

SMOOTH_METADATA = "onnxsmith.smooth"
# op -> the input indices of its per-channel scale and bias (output 0 is the normalized value)
_NORMS = {"LayerNormalization": (1, 2), "SkipLayerNormalization": (2, 3), "RMSNormalization": (1,),
          "SimplifiedLayerNormalization": (1,), "SkipSimplifiedLayerNormalization": (2,)}
_S_RANGE = (1e-5, 1e5)


@register_pass
@dataclasses.dataclass(frozen=True)
class SmoothPass(Pass):
    name = "smooth"
    summary = "SmoothQuant: migrate activation outliers of MatMul/Gemm inputs into their weights (exact in fp32), before int8."
    needs_calibration = True
    atol = 1e-4  # rescaled float sums round differently; deep models move by a few 1e-5

    alpha: float = dataclasses.field(default=0.5, metadata={"doc": "migration strength: 0 leaves activations, 1 moves all their range into weights"})
    search: bool = dataclasses.field(default=False, metadata={"doc": "per group, the alpha (0 = none) with the lowest simulated int8 error, instead of alpha"})
    exclude: tuple[str, ...] = dataclasses.field(default=(), metadata={"doc": "linear node names to leave alone"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must be between 0 and 1")

    def run(self, model: ir.Model, ctx: Context) -> PassResult:
        calibration = ctx.require_calibration(self.name)
        capabilities = ctx.backend.capabilities if ctx.backend is not None else None
        records = smooth_model(model, calibration.feeds(), alpha=self.alpha, search=self.search, exclude=self.exclude,
                               symmetric=capabilities is not None and capabilities.int8_activations != "uint8", measure=ctx.measure)
        counts = {
            "groups_smoothed": len(records),
            "layers_smoothed": sum(len(r["layers"]) for r in records),
            "absorbed": sum(1 for r in records if r["absorbed_into"] != "Mul"),
            "muls_inserted": sum(1 for r in records if r["absorbed_into"] == "Mul"),
        }
        layers = [{"layer": name, **{k: v for k, v in r.items() if k != "layers"}} for r in records for name in r["layers"]]
        return PassResult(model, modified=bool(records), counts=counts, layers=layers)


@dataclass
class _Linear:
    node: ir.Node
    rows_axis: int  # the axis of the weight indexed by the input channel (0 for MatMul, 1 for Gemm transB)

    @property
    def weight(self) -> np.ndarray:
        """The weight as it is now (smoothing a later layer may have rescaled its columns)."""
        return self.node.inputs[1].const_value.numpy()

    def matrix(self) -> np.ndarray:
        """The weight as [K, N] (input channels first)."""
        return self.weight if self.rows_axis == 0 else self.weight.T

    def channel_max(self) -> np.ndarray:
        return np.max(np.abs(self.weight), axis=1 - self.rows_axis)


def smooth_model(
    model: ir.Model,
    feeds: list[dict[str, np.ndarray]],
    *,
    alpha: float,
    search: bool = False,
    symmetric: bool = False,
    exclude: tuple[str, ...] = (),
    measure: Measurements | None = None,
) -> list[dict]:
    """Smooth ``model`` in place; one record per group smoothed. ``search``: choose alpha
    per group by the simulated int8 error (activations ``symmetric`` int8, else uint8)."""
    groups = _groups(model, exclude)
    if not groups:
        return []
    per_feed = -(-SAMPLE_ROWS // max(len(feeds), 1)) if search else 0
    stats = (measure or Measurements()).reduce(model, dict.fromkeys(groups, AbsMaxRows(per_feed)), feeds)
    records = []
    # Last group first: smoothing a group may rescale the output columns of the linear
    # producing its input, which belongs to an earlier group, whose s must see that weight.
    for name, linears in reversed(groups.items()):
        activation = linears[0].node.inputs[0]
        x_max = stats[name].absmax
        w_max = np.max([linear.channel_max() for linear in linears], axis=0)
        chosen, errors = alpha, {}
        if search:
            chosen, error, unsmoothed = best_alpha(stats[name].rows, [linear.matrix() for linear in linears],
                                                   lambda a: _scales(x_max, w_max, a), symmetric=symmetric)
            errors = {"int8_error_before": unsmoothed, "int8_error_after": error}
        s = _scales(x_max, w_max, chosen)
        if chosen == 0.0 or np.all(np.abs(s - 1.0) <= 1e-3):
            continue
        for linear in linears:
            shape = [1, 1]
            shape[linear.rows_axis] = -1
            _set_constant(model, linear.node, 1, linear.weight * s.reshape(shape))
        absorbed = _absorb(model, activation, {id(linear.node) for linear in linears}, s)
        if absorbed is None:
            _insert_mul(model, activation, [linear.node for linear in linears], s, chosen)
        after = x_max / s
        records.append({
            "layers": [linear.node.name for linear in linears],
            "activation": name,
            "alpha": chosen,
            "absorbed_into": absorbed or "Mul",
            "outlier_ratio_before": _spread(x_max),  # max / median of the per-channel max |x|
            "outlier_ratio_after": _spread(after),
            **errors,
        })
    return records[::-1]


def _spread(channel_max: np.ndarray) -> float:
    return float(channel_max.max() / max(float(np.median(channel_max)), 1e-12))


def smoothing_nodes(model: ir.Model) -> list[str]:
    """Names of the Mul nodes smoothing inserted (int8 keeps them in float)."""
    return [node.name for node in model.graph if SMOOTH_METADATA in node.metadata_props]


def _groups(model: ir.Model, exclude: tuple[str, ...]) -> dict[str, list[_Linear]]:
    groups: dict[str, list[_Linear]] = {}
    for node in model.graph:
        linear = _linear(node) if node.name not in exclude else None
        if linear is not None:
            groups.setdefault(node.inputs[0].name, []).append(linear)
    return groups


def _linear(node: ir.Node) -> _Linear | None:
    if node.op_type not in ("MatMul", "Gemm") or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return None
    x, w = node.inputs[0], node.inputs[1]
    if x is None or w is None or x.const_value is not None or w.const_value is None:
        return None
    weight = w.const_value.numpy()
    if weight.ndim != 2 or weight.dtype != np.float32:
        return None
    if node.op_type == "Gemm":
        if _int_attr(node, "transA"):
            return None
        return _Linear(node, 1 if _int_attr(node, "transB") else 0)
    return _Linear(node, 0)


def _scales(x_max: np.ndarray, w_max: np.ndarray, alpha: float) -> np.ndarray:
    x_max, w_max = x_max.astype(np.float64), w_max.astype(np.float64)
    valid = (x_max > 0) & (w_max > 0)
    s = np.ones_like(x_max)
    s[valid] = x_max[valid] ** alpha / w_max[valid] ** (1.0 - alpha)
    return np.clip(s, *_S_RANGE).astype(np.float32)


def _absorb(model: ir.Model, activation: ir.Value, group: set[int], s: np.ndarray) -> str | None:
    """Divide ``activation`` by ``s`` inside its producer; the producer's name, or None."""
    producer = activation.producer()
    if producer is None or activation.is_graph_output() or any(id(user) not in group for user, _ in activation.uses()):
        return None
    if producer.op_type in _NORMS and activation is producer.outputs[0]:
        indices = [i for i in _NORMS[producer.op_type] if i < len(producer.inputs) and producer.inputs[i] is not None]
        if all(_vector(producer.inputs[i], s.size) for i in indices):
            for i in indices:
                _set_constant(model, producer, i, producer.inputs[i].const_value.numpy() / s)
            return producer.name
        return None
    if producer.op_type == "Mul":  # a per-channel scale (RMSNorm written out: x * rsqrt(...) * weight)
        for i in (0, 1):
            if _vector(producer.inputs[i], s.size) and producer.inputs[1 - i].const_value is None:
                _set_constant(model, producer, i, producer.inputs[i].const_value.numpy() / s)
                return producer.name
        return None
    if producer.op_type == "Add":  # MatMul + bias
        for i in (0, 1):
            inner, bias = producer.inputs[i], producer.inputs[1 - i]
            upstream = inner.producer() if inner is not None else None
            if (upstream is not None and _vector(bias, s.size) and len(inner.uses()) == 1 and not inner.is_graph_output()
                    and _divide_columns(model, upstream, s)):
                _set_constant(model, producer, 1 - i, bias.const_value.numpy() / s)
                return f"{upstream.name} + {producer.name}"
        return None
    if producer.op_type in ("MatMul", "Gemm") and _divide_columns(model, producer, s):
        return producer.name
    return None


def _divide_columns(model: ir.Model, node: ir.Node, s: np.ndarray) -> bool:
    """Divide the output columns of a MatMul/Gemm with a constant weight (and Gemm's bias) by s."""
    linear = _linear(node)
    if linear is None:
        return False
    columns_axis = 1 - linear.rows_axis
    if linear.weight.shape[columns_axis] != s.size:
        return False
    bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
    if bias is not None and not (_vector(bias, s.size) or _scalar(bias)):
        return False
    shape = [1, 1]
    shape[columns_axis] = -1
    _set_constant(model, node, 1, linear.weight / s.reshape(shape))
    if bias is not None:
        _set_constant(model, node, 2, np.broadcast_to(bias.const_value.numpy(), s.shape) / s)
    return True


def _insert_mul(model: ir.Model, activation: ir.Value, linears: list[ir.Node], s: np.ndarray, alpha: float) -> None:
    name = f"{linears[0].name}/smooth"
    inverse = _new_initializer(model, (1.0 / s).astype(np.float32), f"{name}/inverse_scale")
    mul = ir.node("Mul", [activation, inverse], name=name, metadata_props={SMOOTH_METADATA: f"alpha={alpha:g}"})
    mul.outputs[0].name = f"{activation.name}_smoothed"
    mul.outputs[0].type = activation.type
    mul.outputs[0].shape = activation.shape
    model.graph.insert_before(linears[0], mul)
    for node in linears:
        node.replace_input_with(0, mul.outputs[0])


def _set_constant(model: ir.Model, node: ir.Node, index: int, array: np.ndarray) -> None:
    """Give input ``index`` of ``node`` the constant ``array``: in place when the initializer
    feeds only this input, else as a new initializer."""
    value = node.inputs[index]
    array = np.ascontiguousarray(array, dtype=value.const_value.numpy().dtype)
    if value.name in model.graph.initializers and len(value.uses()) == 1 and not value.is_graph_output():
        value.const_value = ir.tensor(array, name=value.name)
        return
    node.replace_input_with(index, _new_initializer(model, array, f"{value.name}/smoothed"))


def _new_initializer(model: ir.Model, array: np.ndarray, name: str) -> ir.Value:
    unique, i = name, 1
    while unique in model.graph.initializers:
        unique, i = f"{name}.{i}", i + 1
    value = ir.Value(name=unique, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.FLOAT),
                     const_value=ir.tensor(array, name=unique))
    model.graph.register_initializer(value)
    return value


def _vector(value: ir.Value | None, size: int) -> bool:
    return value is not None and value.const_value is not None and value.const_value.numpy().shape == (size,)


def _scalar(value: ir.Value) -> bool:
    return value.const_value is not None and value.const_value.numpy().size == 1


def _int_attr(node: ir.Node, name: str) -> int:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else 0
