"""fp16 and bf16: weights stored in half precision, ops computed low where the backend can.

1. Plan (float16_plan.py): which nodes compute in the low precision, from the target
   backend's fp16/bf16 kernels (``Capabilities.fp16_ops``/``bf16_ops``), and which stay
   fp32 and why (precision-sensitive ops, shape arithmetic, constants that do not fit).
   ``ops=[Conv,MatMul,...]`` names the compute op types to run low whatever the backend
   has (e.g. an artifact for a GPU prepared on a CPU machine).
2. Rewrite (float16_rewrite.py): low types, weights stored low, one Cast per boundary,
   float32 inputs and outputs (``keep_io_types=false`` is refused: the pipeline verifies
   every pass with float32 feeds).
3. Guard (guard.py, on by default): if the held-out drift exceeds the budget, the most
   sensitive layers go back to fp32.

ONNX Runtime CPU has fp16 kernels for data movement and LayerNormalization only, and bf16
kernels for fewer still: there every op computes in fp32 and only the weights are stored
low, read through a Cast that ONNX Runtime folds when it loads the model. The artifact is
half the size and as fast and as accurate as fp32; the report warns that it saves size,
not time. (Computing in fp16 there would be slower: ONNX Runtime would wrap every op in
Casts to float.)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING

import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxsmith.backend import Backend, get_backend
from onnxsmith.context import Context
from onnxsmith.errors import InputError, first_line
from onnxsmith.measure import Measurements
from onnxsmith.pass_base import PassResult
from onnxsmith.passes.quantize.float16_plan import COMPUTE_OPS, Plan, plan_precision, qualified_op
from onnxsmith.passes.quantize.float16_rewrite import RewriteStats, apply_plan
from onnxsmith.passes.quantize.guard import guard_budget
from onnxsmith.passes.quantize.qdq import upgrade_for_per_channel
from onnxsmith.passes.quantize.uncalibrated import NOTE, guard_context

if TYPE_CHECKING:
    from onnxsmith.passes.quantize.quantize_pass import QuantizePass

__all__ = ["quantize_float16"]

Build = tuple[ir.Model, Plan, RewriteStats]


def quantize_float16(options: QuantizePass, model: ir.Model, ctx: Context) -> PassResult:
    """``model`` (untouched) in ``options.mode`` (fp16 or bf16), as the options and backend say."""
    precision = options.mode
    if not options.keep_io_types:
        raise InputError(f"keep_io_types=false ({precision} model inputs and outputs) is not supported: onnxsmith "
                         "verifies every pass by feeding the float32 evaluation data",
                         "keep keep_io_types=true; the Casts at the boundaries cost little next to the network")
    backend = ctx.backend or get_backend("cpu")
    provider = getattr(backend, "provider", None) or backend.name
    forced = frozenset(options.ops)
    kernels = None if forced else (backend.capabilities.fp16_ops if precision == "fp16" else backend.capabilities.bf16_ops)
    notes: list[str] = []
    work = _prepared(model)
    if precision == "bf16":
        work, from_opset = upgrade_for_per_channel(work)
        if from_opset is not None:
            notes.append(f"converted from opset {from_opset} to 13: Cast from bfloat16 needs it")

    def build(exclude: list[str]) -> Build:
        excluded = frozenset([*options.exclude, *exclude])
        copy = work.clone()
        plan = plan_precision(copy, precision, kernels=kernels, compute=forced or COMPUTE_OPS, forced=forced,
                              exclude=excluded, provider=provider)
        return copy, plan, apply_plan(copy, plan, exclude=excluded)

    converted, plan, stats = build([])
    if forced:
        _check_loads(ctx.measure, converted, precision)
    counts: dict[str, int] = {}
    kept: list[tuple[str, float]] = []
    if options.guard:
        low_names = {n.name for n, p in plan.nodes.items() if p.low} | stats.weight_readers
        layers = [n for n in work.graph if n.name in low_names]
        guard_ctx, replaced = guard_context(ctx)
        outcome = guard_budget(work, converted, layers, lambda exclude: build(exclude)[0], guard_ctx)
        kept = outcome.kept_float
        if outcome.model is not converted:  # rebuilt for its plan and stats (the guard keeps only models)
            converted, plan, stats = build([name for name, _ in kept])
        counts["guard_probes"] = outcome.probes
        notes.extend(outcome.notes)
        if replaced and outcome.probes > 1:
            notes.append(NOTE)
    converted.metadata_props.update(model.metadata_props)
    layers_report = _layers(plan, stats, precision, dict(kept), set(options.exclude))
    counts.update(_counts(plan, stats, len(kept)))
    notes[:0] = _notes(plan, stats, precision)
    return PassResult(converted, modified=True, counts=counts, notes=notes,
                      warnings=_warnings(backend, provider, precision, plan, stats), layers=layers_report)


def _prepared(model: ir.Model) -> ir.Model:
    """A copy with every Constant node lifted to an initializer (so one rule converts all
    constants), unique names, in topological order."""
    work = model.clone()
    common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(work)
    common_passes.NameFixPass()(work)
    common_passes.TopologicalSortPass()(work)
    return work


def _check_loads(measure: Measurements, model: ir.Model, precision: str) -> None:
    """With ``ops`` forced, ONNX Runtime CPU (which verifies every pass) must still load the
    model: it casts fp16 ops it lacks kernels for, but not bf16 ones. The session is the one
    the pipeline's check of the pass reuses."""
    try:
        measure.session(model)
    except Exception as e:  # onnxruntime raises its own NotImplemented/Fail types
        raise InputError(f"ONNX Runtime CPU cannot run this {precision} model: {first_line(e)}",
                         f"leave ops unset ({precision} weights, fp32 compute where CPU kernels are missing)") from None


def _layers(plan: Plan, stats: RewriteStats, precision: str, guarded: dict[str, float], excluded: set[str]) -> list[dict]:
    rows = []
    for node, node_plan in plan.nodes.items():
        row = {"layer": node.name, "op": node.op_type, "precision": precision if node_plan.low else "fp32"}
        if not node_plan.low:
            row["reason"] = (f"kept in fp32 by the accuracy guard (sensitivity {guarded[node.name]:.4g})" if node.name in guarded
                             else "excluded by the user" if node.name in excluded else node_plan.reason)
        if node.name in stats.weight_readers:
            row["weights"] = precision
        rows.append(row)
    return rows


def _counts(plan: Plan, stats: RewriteStats, guarded: int) -> dict[str, int]:
    low = sum(p.low for p in plan.nodes.values())
    return {
        "nodes_low": low,
        "nodes_fp32": len(plan.nodes) - low,
        "weights_low": stats.weights_low,
        "weight_bytes_saved": stats.bytes_before - stats.bytes_after,
        "casts": stats.casts,
        "layers_float": guarded,
    }


def _notes(plan: Plan, stats: RewriteStats, precision: str) -> list[str]:
    low = sum(p.low for p in plan.nodes.values())
    notes = [f"{low} of {len(plan.nodes)} float nodes compute in {precision}; {stats.casts} Casts at the boundaries",
             f"{stats.weights_low} weights stored in {precision}: {stats.bytes_before / 1e6:.2f} MB -> {stats.bytes_after / 1e6:.2f} MB"]
    by_reason: dict[str, Counter] = defaultdict(Counter)
    for node, node_plan in plan.nodes.items():
        if not node_plan.low:
            by_reason[node_plan.reason][node.op_type] += 1
    for reason, ops in sorted(by_reason.items(), key=lambda item: -sum(item[1].values())):
        notes.append(f"fp32 ({reason}): " + ", ".join(f"{op} x{n}" for op, n in ops.most_common()))
    if stats.weights_kept:
        notes.append(f"weights left fp32, out of {precision} range or precision: " + ", ".join(stats.weights_kept[:10]))
    return notes


def _warnings(backend: Backend, provider: str, precision: str, plan: Plan, stats: RewriteStats) -> list[str]:
    if precision in backend.capabilities.precisions:
        return []
    saved = (stats.bytes_before - stats.bytes_after) / 1e6
    warnings = [f"{provider} has no fast {precision} kernels: {precision} saves size here ({saved:.1f} MB of weights), not time"]
    have = backend.capabilities.fp16_ops if precision == "fp16" else backend.capabilities.bf16_ops
    if any(p.low and qualified_op(n) not in have for n, p in plan.nodes.items()):
        warnings.append(f"ops computing in {precision} run on {provider} between Casts it inserts: expect them slower than fp32")
    return warnings
