"""int4 weight-only quantization: 4-bit blocks along the reduction axis, RTN or GPTQ.

1. Select the layers: MatMul nodes of the main graph whose B is a constant (initializer
   or Constant node) 2-D float32 weight [K, N] (and, with ``ops`` naming Gather, Gather nodes on axis 0 of a constant
   2-D float32 table: embeddings), minus ``exclude``.
2. Quantize each weight once (a weight shared by several layers stays shared) in blocks of
   ``block`` along K, symmetric or with zero points (blockwise.py); ``method=gptq`` rounds
   with GPTQ on the Hessian of the layer's calibration inputs (gptq.py), ``rtn`` to nearest
   and needs no calibration data. Embedding tables are always RTN, in blocks along D.
3. Emit MatMulNBits / GatherBlockQuantized where the backend has these kernels (asked of
   ``ctx.backend.capabilities.ops``), else int4 DequantizeLinear (opset 21, the model is
   converted when older) feeding the original op (int4_nodes.py). The MatMulNBits we
   write compute with float activations (no accuracy_level); ONNX Runtime fuses the
   DequantizeLinear form into MatMulNBits with int8 activations (its
   session.qdq_matmulnbits_accuracy_level default, 4) when graph optimizations are on:
   on MiniLM, embedding cosine 0.9609 instead of 0.9612, no faster.
4. Guard (on by default): keep the most sensitive layers in float until the drift meets
   the budget (guard.py). Without calibration data (RTN), the guard ranks layers on the
   evaluation feeds.

The activations stay float: this mode shrinks the weights (about 6x at block 32) and, with
MatMulNBits, the memory traffic of memory-bound MatMuls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx.version_converter
import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.errors import RecipeError
from onnxsmith.pass_base import PassResult
from onnxsmith.passes.quantize.blockwise import Int4Weight, rtn_int4
from onnxsmith.passes.quantize.gptq import InverseHessian, gptq_int4, inverse_hessian
from onnxsmith.passes.quantize.guard import guard_budget
from onnxsmith.passes.quantize.int4_nodes import (
    MS_DOMAIN,
    dequantize_gather,
    dequantize_matmul,
    gather_block_quantized,
    matmul_nbits,
)
from onnxsmith.passes.quantize.uncalibrated import NOTE as UNCALIBRATED_NOTE
from onnxsmith.passes.quantize.uncalibrated import guard_context
from onnxsmith.statistics import Hessian

if TYPE_CHECKING:
    from onnxsmith.passes.quantize.quantize_pass import QuantizePass

__all__ = ["INT4_OPS", "MIN_INT4_OPSET", "Int4Layer", "quantize_int4", "select_layers"]

INT4_OPS = ("MatMul", "Gather")
MIN_INT4_OPSET = 21  # INT4 DequantizeLinear with block_size
CONTRIB_KERNELS = {"MatMul": "MatMulNBits", "Gather": "GatherBlockQuantized"}  # ONNX Runtime's com.microsoft ops


@dataclass
class Int4Layer:
    node: ir.Node
    weight: np.ndarray  # [K, N] for MatMul; the table [V, D] for Gather

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def weight_name(self) -> str:
        return self.node.inputs[1 if self.node.op_type == "MatMul" else 0].name

    @property
    def key(self) -> str:
        """One quantized weight per key: a table gathered and multiplied is quantized twice (other axes)."""
        return f"{self.node.op_type}:{self.weight_name}"


def quantize_int4(options: QuantizePass, model: ir.Model, ctx: Context) -> PassResult:
    """``model`` (untouched) with int4 weights as ``options`` say."""
    ops = tuple(options.ops or ("MatMul",))
    unknown = [op for op in ops if op not in INT4_OPS]
    if unknown:
        raise RecipeError(f"quantize{{mode=int4}} cannot quantize {', '.join(unknown)}", f"choose ops among {', '.join(INT4_OPS)}")
    capabilities = ctx.backend.capabilities if ctx.backend is not None else None
    kernels = capabilities.ops if capabilities is not None else frozenset()
    contrib = {op: kernel in kernels for op, kernel in CONTRIB_KERNELS.items()}  # else the DequantizeLinear form
    notes: list[str] = []

    work = model.clone()  # never touch the caller's model (the pass is not in place)
    layers, skipped = select_layers(work, ops, options.exclude)
    notes.extend(f"left in float: {s}" for s in skipped[:20])
    if not layers:
        return PassResult(work, modified=False, notes=[*notes, "int4: no MatMul with a constant 2-D float32 weight"])
    if not all(contrib[layer.node.op_type] for layer in layers):
        work, from_opset = _upgrade_opset(work)
        layers, _ = select_layers(work, ops, options.exclude)
        if from_opset is not None:
            notes.append(f"converted from opset {from_opset} to {MIN_INT4_OPSET}: int4 DequantizeLinear with block_size needs it")

    hessians = _hessians(work, layers, ctx) if options.method == "gptq" else {}
    weights = _quantize_weights(layers, hessians, options.block, options.symmetric)

    def build(exclude: list[str]) -> ir.Model:
        return _rewrite(work, [layer.name for layer in layers if layer.name not in exclude], weights, contrib)

    quantized = build([])
    kept: list[tuple[str, float]] = []
    counts: dict[str, int] = {}
    if options.guard:
        guard_ctx, replaced = guard_context(ctx)
        outcome = guard_budget(work, quantized, [layer.node for layer in layers], build, guard_ctx)
        quantized, kept = outcome.model, outcome.kept_float
        counts["guard_probes"] = outcome.probes
        notes.extend([*outcome.notes, *([UNCALIBRATED_NOTE] if replaced and kept else [])])

    float_names = {name for name, _ in kept}
    records = [_record(layer, weights[layer.key], hessians, options.method, layer.name in float_names) for layer in layers]
    done = [r for r in records if not r["float"]]
    counts.update({
        "layers_quantized": len(done),
        "layers_float": len(float_names) + len(skipped) + sum(1 for n in work.graph if n.name in options.exclude and n.op_type in ops),
        "weight_bytes_before": sum(r["bytes_before"] for r in done),
        "weight_bytes_after": sum(r["bytes_after"] for r in done),
    })
    notes.append(f"int4 {options.method}, block {options.block}, {'symmetric' if options.symmetric else 'asymmetric'}, "
                 "as " + ", ".join(sorted({_form(layer.node.op_type, contrib) for layer in layers})))
    quantized.metadata_props.update(model.metadata_props)
    return PassResult(quantized, modified=bool(done), counts=counts, notes=notes, layers=records)


def select_layers(model: ir.Model, ops: tuple[str, ...], exclude: tuple[str, ...] = ()) -> tuple[list[Int4Layer], list[str]]:
    """(the layers int4 can quantize, why other candidates of ``ops`` cannot)."""
    layers: list[Int4Layer] = []
    skipped: list[str] = []
    for node in model.graph:
        if node.op_type not in ops or node.domain not in ("", "ai.onnx") or node.name in exclude:
            continue
        index = 1 if node.op_type == "MatMul" else 0
        value = node.inputs[index] if len(node.inputs) > index else None
        array = _constant(value)
        if array is None:
            producer = value.producer() if value is not None else None
            if producer is not None and producer.inputs and all(_constant(v) is not None for v in producer.inputs):
                skipped.append(f"{node.name}: its weight is computed from constants by {producer.op_type} (run cleanup first)")
            continue  # otherwise two activations (attention scores): no weight
        if array.ndim != 2 or array.dtype != np.float32:
            skipped.append(f"{node.name}: weight of shape {list(array.shape)} and dtype {array.dtype} is not a float32 matrix")
            continue
        axis = node.attributes.get("axis")
        if node.op_type == "Gather" and axis is not None and axis.as_int() != 0:
            skipped.append(f"{node.name}: Gather on axis {axis.as_int()} (only tables gathered on axis 0)")
            continue
        layers.append(Int4Layer(node, array))
    return layers, skipped


def _constant(value: ir.Value | None) -> np.ndarray | None:
    """The array of an initializer or of a Constant node's ``value``; None for activations."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    attr = producer.attributes.get("value") if producer is not None and producer.op_type == "Constant" else None
    return attr.as_tensor().numpy() if attr is not None else None


def _hessians(model: ir.Model, layers: list[Int4Layer], ctx: Context) -> dict[str, np.ndarray]:
    """Per MatMul weight, the Hessian of its inputs (summed over the layers sharing the weight)."""
    calibration = ctx.require_calibration("quantize{mode=int4,method=gptq}")
    matmuls = [layer for layer in layers if layer.node.op_type == "MatMul"]
    tensors = sorted({layer.node.inputs[0].name for layer in matmuls})
    per_tensor = ctx.measure.reduce(model, dict.fromkeys(tensors, Hessian()), calibration.feeds())
    inputs: dict[str, list[str]] = {}
    for layer in matmuls:
        inputs.setdefault(layer.weight_name, []).append(layer.node.inputs[0].name)
    return {weight: _sum_once(per_tensor, sorted(set(names))) for weight, names in inputs.items()}


def _sum_once(per_tensor: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """The Hessian of one input as is (the same object for every layer reading it), or a sum."""
    return per_tensor[names[0]] if len(names) == 1 else sum(per_tensor[n] for n in names)


def _quantize_weights(layers: list[Int4Layer], hessians: dict[str, np.ndarray], block: int, symmetric: bool) -> dict[str, Int4Weight]:
    weights: dict[str, Int4Weight] = {}
    inverses: dict[int, InverseHessian] = {}  # Q, K and V read one input: one factorisation
    for layer in layers:
        if layer.key in weights:
            continue
        h = hessians.get(layer.weight_name) if layer.node.op_type == "MatMul" else None
        if layer.node.op_type == "Gather":
            weights[layer.key] = rtn_int4(layer.weight.T, block, symmetric)  # blocks along D
        elif h is not None:
            if id(h) not in inverses:
                inverses[id(h)] = inverse_hessian(h)
            weights[layer.key] = gptq_int4(layer.weight, inverses[id(h)], block, symmetric)
        else:
            weights[layer.key] = rtn_int4(layer.weight, block, symmetric)
    return weights


def _rewrite(model: ir.Model, names: list[str], weights: dict[str, Int4Weight], contrib: dict[str, bool]) -> ir.Model:
    """A copy of ``model`` with the layers called ``names`` reading int4 weights."""
    copy = model.clone()
    nodes = {node.name: node for node in copy.graph}
    cache: dict[str, list[ir.Value]] = {}
    replaced: list[ir.Value] = []
    for name in names:
        node = nodes[name]
        weight_value = node.inputs[1 if node.op_type == "MatMul" else 0]
        weight = weights[f"{node.op_type}:{weight_value.name}"]
        if node.op_type == "MatMul":
            (matmul_nbits if contrib["MatMul"] else dequantize_matmul)(copy.graph, node, weight, cache)
        else:
            (gather_block_quantized if contrib["Gather"] else dequantize_gather)(copy.graph, node, weight, cache)
        replaced.append(weight_value)
    for value in {id(v): v for v in replaced}.values():  # the float weights no node reads any more
        if value.uses() or value.is_graph_output():
            continue
        if value.name in copy.graph.initializers:
            del copy.graph.initializers[value.name]
        elif value.producer() is not None and value.producer().op_type == "Constant":
            copy.graph.remove(value.producer(), safe=True)
    if any(node.domain == MS_DOMAIN for node in copy.graph):
        copy.opset_imports.setdefault(MS_DOMAIN, 1)
    return copy


def _form(op_type: str, contrib: dict[str, bool]) -> str:
    return CONTRIB_KERNELS[op_type] if contrib[op_type] else f"int4 DequantizeLinear -> {op_type} (opset {MIN_INT4_OPSET})"


def _upgrade_opset(model: ir.Model) -> tuple[ir.Model, int | None]:
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
    if opset >= MIN_INT4_OPSET:
        return model, None
    converted = onnx.version_converter.convert_version(ir.to_proto(model), MIN_INT4_OPSET)
    converted.ir_version = max(converted.ir_version, 10)
    return ir.from_proto(converted), opset


def _record(layer: Int4Layer, weight: Int4Weight, hessians: dict[str, np.ndarray], method: str, kept_float: bool) -> dict:
    """The report's line for ``layer``: shapes, bytes, and how far its weight moved."""
    original = layer.weight if layer.node.op_type == "MatMul" else layer.weight.T
    error = weight.dequantize() - original
    record = {
        "layer": layer.name,
        "op": layer.node.op_type,
        "shape": list(layer.weight.shape),
        "block": weight.block,
        "method": method if layer.node.op_type == "MatMul" else "rtn",
        "float": kept_float,
        "bytes_before": int(original.size * 4),
        "bytes_after": int(-(-original.size // 2) + weight.scales.nbytes + (0 if weight.symmetric else -(-weight.scales.size // 2))),
        "weight_error": float(np.linalg.norm(error) / max(np.linalg.norm(original), 1e-30)),
    }
    h = hessians.get(layer.weight_name) if layer.node.op_type == "MatMul" else None
    if h is not None:  # relative error of the layer's output on the calibration inputs: tr(E^T H E) / tr(W^T H W)
        h = h.astype(np.float32)
        record["output_error"] = float(np.sqrt(np.sum(error * (h @ error), dtype=np.float64)
                                               / max(float(np.sum(original * (h @ original), dtype=np.float64)), 1e-30)))
    return record
