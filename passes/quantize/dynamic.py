"""dynamic int8: int8 weights, activations quantized at run time; no calibration data.

1. Constant nodes become initializers (ONNX Runtime's quantizer looks for weights only
   there: its quantize_dynamic fails on PP-OCRv4 det and rec), and a Gemm with a constant
   weight becomes MatMul (+ Add of its bias), the only one of the two it quantizes
   (``alpha`` and ``transB`` are folded into the weight).
2. ONNX Runtime's own dynamic quantizer (ONNXQuantizer in IntegerOps mode) writes, per
   MatMul with a constant weight, DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul by
   the scales, which ONNX Runtime fuses into DynamicQuantizeMatMul when it loads the model
   (DynamicQuantizeLSTM for LSTM; QAttention for com.microsoft Attention when ``ops`` asks:
   on ONNX Runtime CPU it broke MiniLM after ``fuse``, so it is not a default). Weights are
   int8, symmetric, per output channel (``per_channel``), in 7 bits where the CPU's u8 x s8
   GEMM saturates (``Capabilities.int8_reduce_range``); activations uint8, one scale per
   tensor and run. Products of two activations (attention scores) stay float.
3. The output head stays float: a MatMul whose result reaches a graph output through bias
   adds, reshapes and Softmax/Sigmoid only. Applications take discrete decisions on those
   logits (argmax, CTC decoding, thresholds) that flip on near-ties: with PP-OCRv4 rec's
   classifier quantized, 3 of 40 held-out word crops decoded differently (spaces between
   words), none without. ``exclude`` names further layers to keep float.
4. Only the op types whose dynamic kernels beat float on the target backend are quantized
   (``Capabilities.dynamic_ops``; ``ops`` overrides, with a warning for slow ones):
   convolutions stay float, as ONNX Runtime's ConvInteger is 2-6x slower than its float
   Conv; the report lists them.
5. The accuracy guard (guard.py, on by default) puts the most sensitive layers back in
   float until the held-out drift meets the budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxruntime.quantization import QuantizationMode, QuantType

# Not in onnxruntime.quantization's exports: quantize_dynamic only reads and writes files
# (a pass does no file I/O), and the guard rebuilds with other exclusions many times.
from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
from onnxruntime.quantization.quant_utils import update_opset_version

from onnxsmith.context import Context
from onnxsmith.pass_base import PassResult
from onnxsmith.passes.quantize.guard import guard_budget
from onnxsmith.passes.quantize.kernels import integer_kernel_check
from onnxsmith.passes.quantize.output_heads import is_output_head
from onnxsmith.passes.quantize.uncalibrated import NOTE, guard_context

if TYPE_CHECKING:
    from onnxsmith.passes.quantize.quantize_pass import QuantizePass

__all__ = ["DEFAULT_OPS", "quantize_dynamic"]

DEFAULT_OPS = ("MatMul", "Gemm")  # when the backend does not say which dynamic kernels are fast
_ORT_OPS = frozenset({"MatMul", "Attention", "LSTM", "Conv"})  # what ONNXQuantizer quantizes dynamically
_DYNAMIC_KERNELS = frozenset({"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
                              "DynamicQuantizeLSTM", "ConvInteger"})
_SLOW = "dynamic int8 convolution (ConvInteger) is 2-6x slower than float on ONNX Runtime CPU; mode=int8 (static) quantizes it"


def quantize_dynamic(options: QuantizePass, model: ir.Model, ctx: Context) -> PassResult:
    """``model`` (untouched) with dynamic int8 MatMul/Gemm (and LSTM) as the options and backend say."""
    capabilities = ctx.backend.capabilities if ctx.backend is not None else None
    fast = tuple(capabilities.dynamic_ops) if capabilities is not None and capabilities.dynamic_ops else DEFAULT_OPS
    op_types = tuple(options.ops or fast)
    warnings = [f"{op}: {_SLOW if op == 'Conv' else 'its dynamic int8 kernel is not known to beat float on this backend'}"
                for op in op_types if op not in fast]
    notes: list[str] = []
    counts: dict[str, int] = {}

    work = ir.from_proto(update_opset_version(ir.to_proto(model), QuantType.QInt8))
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(work)
    common_passes.NameFixPass()(work)
    if "Gemm" in op_types:
        counts["gemm_as_matmul"] = _gemm_as_matmul(work)
    ort_ops = sorted(_ORT_OPS & ({*op_types} | ({"MatMul"} if "Gemm" in op_types else set())))
    eligible = [n for n in work.graph if n.op_type in ort_ops and n.name not in options.exclude and _weighted(n)]
    heads = [n for n in eligible if n.op_type == "MatMul" and is_output_head(n)]
    if heads:
        eligible = [n for n in eligible if n not in heads]
        notes.append(f"output head left float ({', '.join(n.name for n in heads)}): argmax, CTC decoding and thresholds "
                     "flip on near-ties in its logits")
    computed = [n for n in work.graph if n.op_type == "MatMul" and not _weighted(n) and _foldable(n.inputs[1])]
    if computed:
        notes.append(f"{len(computed)} MatMul(s) left float: their weight is computed from constants (run cleanup first to fold it)")
    reduce_range = capabilities.int8_reduce_range if capabilities is not None else False
    if reduce_range:
        notes.append("weights use 7 of their 8 bits: this CPU's u8 x s8 integer GEMM (no VNNI) saturates with full-range weights")

    def quantize(exclude: list[str]) -> ir.Model:
        quantizer = ONNXQuantizer(
            ir.to_proto(work), options.per_channel,
            reduce_range,  # 7-bit weights where u8s8 GEMMs saturate (x86 without VNNI)
            QuantizationMode.IntegerOps, False, QuantType.QInt8,
            QuantType.QUInt8,  # DynamicQuantizeLinear is uint8 only
            None, None, [*options.exclude, *(n.name for n in heads), *exclude], ort_ops,
            extra_options={"MatMulConstBOnly": True},
        )
        quantized = ir.from_proto(quantizer.quantize_model())
        common_passes.TopologicalSortPass()(quantized)
        return quantized

    quantized = quantize([])
    kept: list[tuple[str, float]] = []
    if options.guard:
        guard_ctx, replaced = guard_context(ctx)
        outcome = guard_budget(work, quantized, eligible, quantize, guard_ctx)
        quantized, kept = outcome.model, outcome.kept_float
        counts["guard_probes"] = outcome.probes
        notes.extend(outcome.notes)
        if replaced and outcome.probes > 1:
            notes.append(NOTE)

    skipped = _left_float(eligible, quantized, kept)
    if skipped:
        notes.append(f"{len(skipped)} layer(s) left float by ONNX Runtime's dynamic quantizer: " + ", ".join(skipped[:10]))
    provider = getattr(ctx.backend, "provider", None)
    if provider is not None:
        kernel_counts, _ = integer_kernel_check(quantized, provider)
        counts.update(kernel_counts)
    convs = [n for n in work.graph if n.op_type in ("Conv", "ConvTranspose") and "Conv" not in op_types]
    if convs:
        notes.append(f"{len(convs)} convolution(s) left float: {_SLOW}")
    recurrent = [n for n in work.graph if n.op_type in ("GRU", "RNN")]
    if recurrent:
        notes.append(f"{len(recurrent)} GRU/RNN layer(s) left float: ONNX Runtime has no dynamic int8 kernel for them")
    counts["layers_quantized"] = sum(1 for n in quantized.graph if n.op_type in _DYNAMIC_KERNELS)
    counts["layers_float"] = len(kept) + len(options.exclude) + len(heads)
    counts["convs_float"] = len(convs)
    quantized.metadata_props.update(model.metadata_props)
    layers = _layers(eligible, dict(kept), set(skipped), [n for n in work.graph if n.name in options.exclude], convs, heads)
    return PassResult(quantized, modified=counts["layers_quantized"] > 0, counts=counts, notes=notes, warnings=warnings,
                      layers=layers)


def _weighted(node: ir.Node) -> bool:
    """MatMul with a constant right-hand side (others are activation products); any Attention/LSTM."""
    if node.op_type != "MatMul":
        return True
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    return weight is not None and weight.const_value is not None


def _foldable(value: ir.Value | None) -> bool:
    """Whether ``value`` is computed from constants only (an unfolded Transpose of a weight...)."""
    if value is None or value.const_value is not None:
        return value is not None
    producer = value.producer()
    return producer is not None and bool(producer.inputs) and all(_foldable(v) for v in producer.inputs if v is not None)


def _gemm_as_matmul(model: ir.Model) -> int:
    """Rewrite ``Gemm(A, B, C)`` with a constant B (and transA=0) as ``MatMul(A, alpha*B') + beta*C``."""
    graph, rewritten = model.graph, 0
    for node in list(graph):
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx"):
            continue
        attr = {k: (a.value if a is not None else None) for k, a in node.attributes.items()}
        a, b = node.inputs[0], node.inputs[1]
        c = node.inputs[2] if len(node.inputs) > 2 else None
        alpha, beta = float(attr.get("alpha", 1.0)), float(attr.get("beta", 1.0))
        if attr.get("transA", 0) or b is None or b.const_value is None:
            continue
        if c is not None and c.const_value is None and beta != 1.0:
            continue
        w = b.const_value.numpy().astype(np.float32)
        w = (w.T if attr.get("transB", 0) else w) * np.float32(alpha)
        weight = _initializer(graph, f"{b.name}_matmul", w)
        matmul = ir.node("MatMul", [a, weight], name=node.name)
        new_nodes = [matmul]
        if c is not None:
            bias = c if c.const_value is None else _initializer(graph, f"{c.name}_bias", c.const_value.numpy() * np.float32(beta))
            matmul.outputs[0].name = f"{node.outputs[0].name}_matmul"
            new_nodes.append(ir.node("Add", [matmul.outputs[0], bias], name=f"{node.name}_bias"))
        ir.convenience.replace_nodes_and_values(graph, node, [node], new_nodes, [node.outputs[0]], [new_nodes[-1].outputs[0]])
        rewritten += 1
    if rewritten:
        common_passes.RemoveUnusedNodesPass()(model)
    return rewritten


def _initializer(graph: ir.Graph, base: str, array: np.ndarray) -> ir.Value:
    name, k = base, 1
    while name in graph.initializers:
        name, k = f"{base}_{k}", k + 1
    value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array, dtype=np.float32), name=name))
    graph.register_initializer(value)
    return value


def _left_float(eligible: list[ir.Node], quantized: ir.Model, kept: list[tuple[str, float]]) -> list[str]:
    """Eligible layers the quantizer did not rewrite (still there, same op) that the guard did not keep."""
    remaining = {(n.name, n.op_type) for n in quantized.graph}
    guarded = {name for name, _ in kept}
    return [n.name for n in eligible if (n.name, n.op_type) in remaining and n.name not in guarded]


def _layers(eligible: list[ir.Node], guarded: dict[str, float], skipped: set[str], excluded: list[ir.Node],
            convs: list[ir.Node], heads: list[ir.Node]) -> list[dict]:
    rows = []
    for node in eligible:
        row = {"layer": node.name, "op": node.op_type, "precision": "int8-dynamic"}
        if node.name in guarded:
            row.update(precision="fp32", reason="kept in float by the accuracy guard", sensitivity=guarded[node.name])
        elif node.name in skipped:
            row.update(precision="fp32", reason="left float by ONNX Runtime's dynamic quantizer")
        rows.append(row)
    rows.extend({"layer": n.name, "op": n.op_type, "precision": "fp32", "reason": "excluded by the user"} for n in excluded)
    rows.extend({"layer": n.name, "op": n.op_type, "precision": "fp32", "reason": _SLOW} for n in convs)
    rows.extend({"layer": n.name, "op": n.op_type, "precision": "fp32", "reason": "output head (logits)"} for n in heads)
    return rows
