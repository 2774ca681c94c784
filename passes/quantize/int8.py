"""int8 static quantization (QDQ): calibrate, write QDQ, guard the budget, check kernels.

1. Split ``fuse``'s FusedConv back into Conv + activation (unfuse.py), and convert to
   opset 13 if per-channel weights need it (quantize_static does not, and writes an
   invalid model). With ``smooth=ALPHA``, SmoothQuant first (passes/smooth.py); the Mul
   nodes smoothing inserted (here or by an earlier ``smooth`` pass) stay float.
2. Choose the layers and the tensors to calibrate (int8_plan.py: weighted layers, follow
   ops, float MatMul outputs), and calibrate them with
   ``calibration=minmax|percentile|entropy|mse``, streamed (calibration.py). After the
   plan's static speed rule (depthwise and low-arithmetic layers float), time every other
   planned layer in float and in int8 on the target backend (layer_speed.py) and keep float
   the ones int8 does not make measurably faster (``speed=measured``, the default); where
   that cannot be measured (``speed=rules``, or a target that is another machine without
   a cost table), the rule alone decides.
3. Write QDQ: int8 symmetric per-channel weights, activations as the backend prefers
   (uint8 asymmetric on ONNX Runtime CPU), int32 biases; then correct the biases for the
   mean shift the rounded weights cause (bias_correction.py) and write QDQ again.
4. Guard (on by default): if the held-out drift exceeds the budget (``accuracy.max_drift``,
   default: the budget of the metric the model's signature calls for, task_choice.py), keep
   the most sensitive layers in float (guard.py), ranked by sensitivity per ms of measured gain.
   Where the timing kept layers float, verify end to end: guard the plan with them int8 too
   (by sensitivity alone), time both on the target, keep the one faster in most rounds.
5. Check with ONNX Runtime's optimized graph that integer kernels really run.
6. Where the speed was timed here, time the int8 model against the float one end to end,
   and hand back the float model (with a warning) unless int8 was faster in most rounds (of
   one run, or of a second that confirms a verdict against it): int8 costs accuracy, so it
   must buy speed on the target.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxsmith.context import Context
from onnxsmith.latency import LatencyStats, consistently_faster, measure_interleaved
from onnxsmith.pass_base import PassResult
from onnxsmith.passes.quantize.bias_correction import apply_bias_corrections, bias_corrections
from onnxsmith.passes.quantize.calibration import collect_ranges
from onnxsmith.passes.quantize.guard import guard_budget
from onnxsmith.passes.quantize.int8_plan import FOLLOW_OPS, WEIGHTED_OPS, Int8Plan, default_op_types, other_int8_ops, plan_int8
from onnxsmith.passes.quantize.kernels import integer_kernel_check, reads_int8_weight
from onnxsmith.passes.quantize.layer_speed import SpeedTable, costs_table, measure_layer_speed
from onnxsmith.passes.quantize.qdq import quantize_qdq, upgrade_for_per_channel
from onnxsmith.passes.quantize.unfuse import unfuse_for_int8
from onnxsmith.passes.smooth import smooth_model, smoothing_nodes

if TYPE_CHECKING:
    from onnxsmith.passes.quantize.quantize_pass import QuantizePass

__all__ = ["Int8Build", "int8_not_faster", "prepare_int8", "quantize_int8"]

SPEED_FEEDS = 2  # calibration feeds the per-layer timing cycles through
VERIFY_ROUNDS = 15  # interleaved rounds of the end-to-end check of the timed plan


@dataclass
class Int8Build:
    """A model made ready for int8 (calibrated, biases corrected) and the way to write it.

    ``build(names)`` writes the QDQ model with the layers ``names`` kept in float; the
    guard calls it once per probe, so everything that does not depend on ``names`` is
    done once, here."""

    float_model: ir.Model  # unfused, opset-upgraded, smoothed: what ``build`` quantizes
    plan: Int8Plan
    build: Callable[..., ir.Model]  # build(exclude, admit=()): admit overrides the plan's float layers
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    speed: SpeedTable | None = None  # each layer's int8 speed, measured on the target (layer_speed.py)
    unwritable: dict[str, str] = field(default_factory=dict)  # layers the QDQ writer left float, and why
    timed_float: list[ir.Node] = field(default_factory=list)  # layers the timing here moved to float (verified after the guard)


def prepare_int8(options: QuantizePass, model: ir.Model, ctx: Context) -> Int8Build:
    """Steps 1-3 for ``model`` (untouched) with ``options``."""
    calibration = ctx.require_calibration(options.name)
    capabilities = ctx.backend.capabilities if ctx.backend is not None else None
    op_types = list(options.ops or default_op_types(capabilities.int8_ops if capabilities else None))
    if options.all_ops and not options.ops and capabilities is not None:
        op_types += other_int8_ops(capabilities.int8_ops)
    activations = options.activations if options.activations != "auto" else (capabilities.int8_activations if capabilities else "uint8")
    notes: list[str] = []
    counts: dict[str, int] = {}

    work = model.clone()  # never touch the caller's model; tensors are shared, never written in place
    unfused = unfuse_for_int8(work)
    if unfused:
        counts["convs_unfused"] = unfused
    if options.per_channel:
        work, from_opset = upgrade_for_per_channel(work)
        if from_opset is not None:
            notes.append(f"converted from opset {from_opset} to 13: per-channel DequantizeLinear needs it")
    if options.smooth:
        smoothed = smooth_model(work, calibration.feeds(), alpha=options.smooth, exclude=options.exclude, measure=ctx.measure)
        counts["layers_smoothed"] = sum(len(record["layers"]) for record in smoothed)
    smoothing = smoothing_nodes(work)  # smooth's Muls stay float: quantizing their input would undo them
    # which layers int8 slows down: measured on the target where it can be (timing here, or
    # a cost table from there), after the rules (where the backend says its int8 kernels lose
    # on small layers; no backend: assume so). The rules stay on with the measurement because
    # they also keep float the small and depthwise layers int8 hurts most: timed alone, on a
    # 2-core AVX-512 VNNI EPYC, PP-OCRv4 rec's int8 lost the task on ORT (held-out text
    # agreement 0.906, bound 0.95) while the guard's four held-out lines saw no change
    # (docs/benchmarks.md "## int8 variants on ONNX Runtime CPU").
    measure_speed = (options.skip_slow and not options.ops and options.speed == "measured"
                     and (ctx.costs is not None or _measurable(ctx)))
    slow_small = capabilities.int8_slow_small_layers if capabilities else True
    rule = options.skip_slow and slow_small and not options.ops
    rules = {**({} if rule else {"min_intensity": 0.0}), **({"heads": False} if options.ops else {})}
    plan = plan_int8(work, op_types, exclude=[*options.exclude, *smoothing], **rules)
    if plan.heads:
        notes.append(f"output head left float ({', '.join(plan.heads[:6])}{', ...' if len(plan.heads) > 6 else ''}): "
                     "argmax, CTC decoding and thresholds flip on near-ties in its values")
    if plan.slow:
        depthwise = sum(1 for why in plan.slow.values() if why.startswith("depthwise"))
        notes.append(f"{len(plan.slow)} layer(s) left float because int8 would slow them down on this backend "
                     f"({depthwise} depthwise, {len(plan.slow) - depthwise} with too little arithmetic per value moved)")
    products = len(plan.float_layers) - len(plan.heads) - len(plan.slow)
    if products:
        notes.append(f"{products} MatMul(s) of two activations left float (attention scores)")
    ranges = collect_ranges(ctx.measure, work, plan.tensors, calibration.feeds(), method=options.calibration,
                            percentile=options.percentile, activations=activations)
    reduce_range = bool(capabilities and capabilities.int8_reduce_range and activations == "uint8")
    hard_activations = bool(options.hard_activations and capabilities and "HardSwish" in capabilities.int8_ops)
    corrections: dict[str, np.ndarray] = {}
    unwritable: dict[str, str] = {}

    def build(exclude: list[str], admit: Collection[str] = ()) -> ir.Model:
        excluded = [*options.exclude, *smoothing, *(n for n in plan.float_layers if n not in admit), *exclude]
        source = work
        if corrections:
            source = apply_bias_corrections(work, {k: v for k, v in corrections.items() if k not in excluded})
        result = quantize_qdq(source, ranges, op_types=op_types, exclude=excluded, per_channel=options.per_channel,
                              activations=activations, reduce_range=reduce_range, float_output_ops=plan.float_output_ops,
                              integer_hard_activations=hard_activations)
        unwritable.update(result.skipped)
        return result.model

    if options.bias_correction:
        names = [n.name for n in plan.layers]
        corrections.update(bias_corrections(ctx.measure, work, build([]), names, calibration.feeds()))
        counts["biases_corrected"] = len(corrections)
    timed_float: list[ir.Node] = []
    speed = _keep_slow_layers_float(ctx, work, plan, build, calibration.feeds(), notes, timed_float) if measure_speed else None
    return Int8Build(work, plan, build, counts, notes, speed, unwritable, timed_float if ctx.costs is None else [])


def _measurable(ctx: Context) -> bool:
    """Whether per-layer int8 speed can be timed here for the target: a backend, run on the target's CPU."""
    return ctx.backend is not None and not ctx.backend.target.measured_elsewhere


def _keep_slow_layers_float(ctx: Context, work: ir.Model, plan: Int8Plan, build: Callable[..., ir.Model],
                            feeds: list[dict[str, np.ndarray]], notes: list[str], moved: list[ir.Node]) -> SpeedTable:
    """Time every planned layer in float and int8 on the target (layer_speed.py), or read
    the target's cost table (``--costs``), and move the ones int8 does not make measurably
    faster to the plan's float layers (and to ``moved``)."""
    if ctx.costs is not None:
        table = costs_table(ctx.costs, [n.name for n in plan.layers])
        where, cpu = f"the cost table {ctx.costs.source}", ctx.costs.cpu
        missing = [n.name for n in plan.layers if n.name not in table.layers]
        if missing:
            notes.append(f"{len(missing)} layer(s) not in {where} (another model or recipe?), left int8: "
                         f"{', '.join(missing[:5])}")
    else:
        table = measure_layer_speed(ctx.backend, work, build([]), [n.name for n in plan.layers], feeds[:SPEED_FEEDS])
        where, cpu = ctx.backend.name, ctx.backend.target.cpu
    slower = [node for node in plan.layers if node.name in table.layers and not table.layers[node.name].pays]
    moved.extend(slower)
    for node in slower:
        speed = table.layers[node.name]
        plan.layers.remove(node)
        plan.float_layers.append(node.name)
        plan.slow[node.name] = (f"measured on {where} ({cpu.isa}): int8 {speed.int8_ms:.4f} ms vs float "
                                f"{speed.float_ms:.4f} ms, no faster than the noise ({speed.noise_ms:.4f} ms)")
    notes.append(f"int8 speed measured per layer on {where}, {cpu.model} ({cpu.isa}): {len(slower)} of "
                 f"{len(table.layers)} layer(s) no faster in int8, kept float; every layer int8: {table.int8_ms:.3f} ms vs "
                 f"float {table.float_ms:.3f} ms")
    return table


def quantize_int8(options: QuantizePass, model: ir.Model, ctx: Context) -> PassResult:
    """``model`` (untouched) quantized to int8 QDQ as ``options`` say (steps 1-5)."""
    prepared = prepare_int8(options, model, ctx)
    counts, notes = dict(prepared.counts), list(prepared.notes)
    quantized, kept = _guarded(options, prepared, prepared.plan.layers, prepared.build, ctx, counts, notes)
    if prepared.timed_float:
        quantized, kept = _verify_timed_plan(options, prepared, quantized, kept, ctx, counts, notes)

    provider = getattr(ctx.backend, "provider", None)
    if provider is not None:
        ctx.measure.release_sessions()  # the kept one holds a copy of the weights; the check makes another
        kernel_counts, fallbacks = integer_kernel_check(quantized, provider, ctx.calibration.feeds()[0])
        counts.update(kernel_counts)
        notes.extend(f"runs as float after DequantizeLinear on {provider}: {name}" for name in fallbacks[:10])
    int8_layers = {n.name for n in quantized.graph if n.op_type in WEIGHTED_OPS and reads_int8_weight(n)}
    kept_names = {name for name, _ in kept}
    int8_layers |= {n.name for n in prepared.plan.layers if n.op_type not in WEIGHTED_OPS  # rule 6's ops: by the plan
                    and n.name not in kept_names and n.name not in prepared.unwritable}
    layers = _layers(prepared, dict(kept), int8_layers, options.exclude)
    if prepared.speed is not None:
        for row in layers:
            if row["layer"] in prepared.speed.layers:
                row.update(prepared.speed.layers[row["layer"]].to_dict())
    if prepared.unwritable:
        notes.extend(f"left float, int8 cannot be written for it: {name}: {why}" for name, why in list(prepared.unwritable.items())[:10])
    counts["layers_quantized"] = len(int8_layers)
    counts["layers_float"] = len(kept) + len(options.exclude)  # by the guard and the user
    counts["layers_float_by_rule"] = sum(1 for row in layers if row["precision"] == "fp32") - counts["layers_float"]
    if prepared.speed is not None:
        predicted = prepared.speed.predict_ms(int8_layers)
        notes.append(f"predicted from the per-layer timing: {predicted:.3f} ms, {prepared.speed.float_ms / predicted:.2f}x of "
                     f"float's {prepared.speed.float_ms:.3f} ms; the report's latency is the measured one")
    if not int8_layers:  # nothing to gain, and a QDQ rewrite would still cost time: hand back the model as it came
        where = ctx.backend.name if ctx.backend is not None else "this target"
        warning = (f"no layer is int8 on {where}: {counts['layers_float']} kept float by the accuracy guard or the user, "
                   f"{counts['layers_float_by_rule']} by the speed rules, the timing or as output heads (the per-layer rows "
                   "say why); the model is returned unchanged")
        return PassResult(model.clone(), modified=False, counts=counts, notes=notes, layers=layers, warnings=[warning])
    if prepared.speed is not None and ctx.costs is None:
        slower = _no_faster_than_float(model, quantized, ctx, notes)
        if slower is not None:
            for row in layers:
                if row["precision"] == "int8":
                    row.update(precision="fp32", reason=f"planned int8, but {slower}")
            warning = f"int8 is {slower}; the model is returned unchanged (use speed=rules to keep int8 regardless)"
            return PassResult(model.clone(), modified=False, counts=counts, notes=notes, layers=layers, warnings=[warning])
    quantized.metadata_props.update(model.metadata_props)
    return PassResult(quantized, modified=True, counts=counts, notes=notes, layers=layers)


def _no_faster_than_float(model: ir.Model, quantized: ir.Model, ctx: Context, notes: list[str]) -> str | None:
    """Time the int8 model against the float one it came from on the target, interleaved; why
    int8 is not worth its error where it was not faster in most rounds, else None. Per-layer
    gains do not always add up end to end: Q/DQ around float ops, layout changes and kernel
    dispatch are outside every layer's timing (on a 2-core Xeon with VNNI, three zoo models
    ran 0.86x-0.97x of float in int8 before this check).

    A verdict against int8 is confirmed by a second run, and int8 is kept if that one finds it
    faster: a burst of load on a shared machine can slow one session's rounds (PP-OCRv4 rec,
    1.5x faster in int8 before and after, once measured 1.01x and lost its int8), while int8
    that is no faster wins three quarters of the rounds of neither run."""
    sessions = {"int8": ctx.measure.session(quantized, ctx.backend),  # first: the timed plan's check may have just made it
                "float": ctx.measure.session(model, ctx.backend)}
    feed = ctx.calibration.feeds()[0]
    stats = measure_interleaved(sessions, feed, rounds=VERIFY_ROUNDS)
    slower = int8_not_faster(stats["float"], stats["int8"], ctx.backend.name)
    if slower is not None:
        first = f"int8 {stats['int8'].median_ms:.3f} ms against {stats['float'].median_ms:.3f} ms"
        stats = measure_interleaved(sessions, feed, rounds=VERIFY_ROUNDS)
        slower = int8_not_faster(stats["float"], stats["int8"], ctx.backend.name)
        if slower is None:
            notes.append(f"end to end on {ctx.backend.name}, a first run found int8 no faster ({first}); a second found it "
                         "faster, so it is kept")
        else:
            slower += f", twice (first run: {first})"
    if slower is None:
        notes.append(f"verified end to end on {ctx.backend.name}: int8 {stats['int8'].median_ms:.3f} ms against float's "
                     f"{stats['float'].median_ms:.3f} ms, faster in three quarters of {stats['int8'].rounds} rounds or more")
    return slower


def int8_not_faster(float_stats: LatencyStats, int8_stats: LatencyStats, where: str) -> str | None:
    """Why the int8 model does not pay on ``where`` (not faster than float in most rounds of
    one interleaved run), or None where it does."""
    if consistently_faster(int8_stats, float_stats):
        return None
    return (f"no faster than float end to end: {int8_stats.median_ms:.3f} ms against {float_stats.median_ms:.3f} ms "
            f"({float_stats.median_ms / int8_stats.median_ms:.2f}x; faster in fewer than three quarters of "
            f"{int8_stats.rounds} interleaved rounds on {where})")


def _guarded(options: QuantizePass, prepared: Int8Build, layers: list[ir.Node], build: Callable[[list[str]], ir.Model],
             ctx: Context, counts: dict[str, int], notes: list[str], *, by_gain: bool = True) -> tuple[ir.Model, list[tuple[str, float]]]:
    """``build``'s model with every layer of ``layers`` int8, or, with the guard on, with the
    fewest of them float that the budget needs (ranked by sensitivity per ms of measured gain,
    or with ``by_gain`` off by sensitivity alone); and the layers the guard kept float."""
    quantized = build([])
    if not options.guard:
        return quantized, []
    gains = {name: speed.gain_ms for name, speed in prepared.speed.layers.items()} if prepared.speed and by_gain else None
    outcome = guard_budget(prepared.float_model, quantized, layers, build, ctx, gains=gains)
    counts["guard_probes"] = counts.get("guard_probes", 0) + outcome.probes
    notes.extend(outcome.notes)
    return outcome.model, outcome.kept_float


def _verify_timed_plan(options: QuantizePass, prepared: Int8Build, timed: ir.Model, kept: list[tuple[str, float]],
                       ctx: Context, counts: dict[str, int], notes: list[str]) -> tuple[ir.Model, list[tuple[str, float]]]:
    """Verify and repair the per-layer timing end to end: timed one by one, a layer whose gain
    is within its kernels' noise stays float, but many such layers can add up to a gain
    (unless their gains add up to a loss beyond their summed noise: then there is nothing to
    verify, and a big model is spared two more sessions of its own); and
    the guard, ranking by sensitivity per ms gained, may keep many cheap layers float to
    cover one sensitive layer of high gain (on YOLOv8n the timed plan ran 1.18x-1.40x with
    8-23 layers kept float, the rules' plan 1.39x-1.54x with 2). Guard the plan with those
    layers int8 too, by sensitivity alone, time both on the target in one interleaved run,
    and keep that one only if it was faster in most rounds."""
    plan, moved = prepared.plan, prepared.timed_float
    admit = {node.name for node in moved}
    gain, noise = prepared.speed.gain_of(admit)
    if gain < -noise:  # timed all int8 at once, neighbours included: admitting them all, as the check would, is slower
        notes.append(f"not verified end to end: the {len(moved)} layer(s) the timing kept float measured {-gain:.3f} ms slower "
                     f"in int8 together, beyond their noise ({noise:.3f} ms)")
        return timed, kept
    notes_before = len(notes)
    full, full_kept = _guarded(options, prepared, [*plan.layers, *moved], lambda exclude: prepared.build(exclude, admit=admit),
                               ctx, counts, notes, by_gain=False)
    del notes[notes_before:]  # the kept plan's guard notes are the ones that describe the artifact
    if admit <= {name for name, _ in full_kept}:
        notes.append(f"verified: the guard keeps all {len(moved)} layer(s) the timing kept float in float anyway")
        return timed, kept
    feed = ctx.calibration.feeds()[0]
    stats = measure_interleaved({"timed": ctx.measure.session(timed, ctx.backend), "full": ctx.measure.session(full, ctx.backend)},
                                feed, rounds=VERIFY_ROUNDS)
    timed_ms, full_ms = stats["timed"].median_ms, stats["full"].median_ms
    if not consistently_faster(stats["full"], stats["timed"]):
        notes.append(f"verified end to end on {ctx.backend.name}: the timed plan {timed_ms:.3f} ms, with the {len(moved)} layer(s) "
                     f"it kept float in int8 too {full_ms:.3f} ms (guarded): kept the timed plan")
        return timed, kept
    for node in moved:
        plan.layers.append(node)
        plan.float_layers.remove(node.name)
        del plan.slow[node.name]
    notes.append(f"verified end to end on {ctx.backend.name}: the timed plan {timed_ms:.3f} ms, with the {len(moved)} layer(s) "
                 f"it kept float in int8 too {full_ms:.3f} ms (guarded, faster in most of {VERIFY_ROUNDS} rounds): kept that; "
                 "their gains, each within the noise, add up")
    counts["layers_admitted_end_to_end"] = len(moved)
    return full, full_kept


def _layers(prepared: Int8Build, guarded: dict[str, float], int8_layers: set[str], excluded: tuple[str, ...]) -> list[dict]:
    """One record per layer (weighted, or of rule 6's ops when asked for): its precision, and
    why a float one stayed float."""
    plan = prepared.plan
    listed = {*WEIGHTED_OPS, *(op for op in plan.op_types if op not in FOLLOW_OPS)}
    reasons = {name: why for name, why in plan.slow.items()}
    reasons.update({name: "output head: argmax and thresholds flip on near-ties in its values" for name in plan.heads})
    reasons.update({name: f"int8 cannot be written for it: {why}" for name, why in prepared.unwritable.items()})
    rows = []
    for node in prepared.float_model.graph:
        if node.op_type not in listed:
            continue
        row = {"layer": node.name, "op": node.op_type, "precision": "int8" if node.name in int8_layers else "fp32"}
        if node.name in guarded:
            row.update(reason="kept in float by the accuracy guard", sensitivity=guarded[node.name])
        elif node.name in excluded:
            row["reason"] = "excluded by the user"
        elif node.name in reasons:
            row["reason"] = reasons[node.name]
        elif node.name in plan.float_layers:
            row["reason"] = "MatMul of two activations (attention scores)"
        elif row["precision"] == "fp32":
            row["reason"] = "not in the quantized op set, or its weight is not a constant"
        rows.append(row)
    return rows
