"""``optimize --auto``: try whole candidate pipelines, measure each on the target, keep the fastest within budget.

The per-layer int8 choice (passes/quantize/int8.py) works one level down; here the
candidates are whole recipes built from the user's (backend, target, data, metric):

- ``fuse``: exact fusions only (always within budget: the fallback);
- ``opset+fuse``: an upgrade to opset 17 first, for models below it (it unlocks
  LayerNormalization, HardSwish and the fusions that need newer ops);
- ``int8``: int8 with the per-layer choice measured on the target;
- ``int8-rules``: the same with the static speed rules alone, no per-layer timing (only
  when asked: the int8 pass verifies its timed plan against the rules' plan itself);
- ``int8-all-ops``: the backend's other int8 ops (Add, Mul, Concat, Sigmoid...) as layers
  too, each timed and guarded, for models that have them (only when asked);
- ``int4``: int4 weights, for models whose weights are mostly MatMul/Gemm;
- ``bf16`` / ``fp16`` runtime (and ``int8+bf16``): the same graphs with the backend told to
  compute in that precision, where it can (OpenVINO); a precision the CPU cannot run
  compiles to f32, which the measurement shows, and the candidate is dropped;
- ``prune``: channel pruning at 10% (only when asked: it takes minutes on conv models, and
  without fine-tuning it rarely keeps a task budget).

The two exact candidates are built first; they are the base the others build on (the
lossy passes run after them). Where both built, they are timed against each other on the
target and opset+fuse is the base only if it was faster in most rounds: an upgrade that
unlocks fusions (PP-OCRv4 det's HardSwish) speeds up every candidate built on it.

All candidates share one loaded model, one data split, one set of reference outputs and
one measurement service (its activations and sessions), and are timed in one interleaved
run against the original on the same backend. The original model on every other installed
backend is timed in that run too, so the search can say when another runtime would be
much faster here than anything built for this one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxsmith.backend import available_backends, get_backend
from onnxsmith.errors import AccuracyBudgetExceeded, PassFailure, RecipeError, first_line
from onnxsmith.gates import check_gates
from onnxsmith.latency import MIN_ROUNDS, LatencyStats, consistently_faster, measure_interleaved, speedup_summary
from onnxsmith.modelio import model_bytes
from onnxsmith.optimize import AS_IS, Built, OptimizeOptions, Prepared, as_is_session, build, prepare, write
from onnxsmith.passes.quantize.int8_plan import other_int8_ops
from onnxsmith.recipe import Recipe, parse_pipeline
from onnxsmith.report import Report

__all__ = ["CANDIDATES", "DEFAULT_CANDIDATES", "Candidate", "auto_optimize"]

logger = logging.getLogger(__name__)

MATMUL_HEAVY = 0.5  # share of the weights in MatMul/Gemm above which int4 weights are tried
OTHER_BACKEND_HINT = 1.2  # another backend this much faster than the chosen artifact is worth a line


@dataclass(frozen=True)
class Candidate:
    name: str
    passes: str  # an exact candidate's whole pipeline; the others' passes after the exact base
    precision: str = "fp32"  # the backend's whole-model inference precision
    exact: bool = False

    def pipeline(self, base: str) -> str:
        """The passes this candidate runs on the exact pipeline ``base``."""
        return self.passes if self.exact else ",".join(p for p in (base, self.passes) if p)


CANDIDATES = (
    # at the model's own opset: opset+fuse is the upgrade, and the search times the two
    Candidate("fuse", "fuse{upgrade_opset=false}", exact=True),
    Candidate("opset+fuse", "opset{version=17},fuse", exact=True),
    Candidate("int8", "quantize{mode=int8}"),
    Candidate("int8-rules", "quantize{mode=int8,speed=rules}"),
    Candidate("int8-all-ops", "quantize{mode=int8,all_ops=true}"),
    Candidate("int4", "quantize{mode=int4}"),
    Candidate("bf16", "", "bf16"),
    Candidate("fp16", "", "fp16"),
    Candidate("int8+bf16", "quantize{mode=int8}", "bf16"),
    Candidate("prune", "prune{method=channel,ratio=0.1}"),
)
BASES = tuple(c for c in CANDIDATES if c.exact)
# opt-in: prune rarely keeps a task without fine-tuning; int8-all-ops was never faster beyond the
# noise on the real models and lost tasks on held-out data its guard did not see; int8 already
# verifies its timed plan against the rules' one end to end (docs/benchmarks.md "## int8
# variants on ONNX Runtime CPU")
OPT_IN = ("prune", "int8-all-ops", "int8-rules")
DEFAULT_CANDIDATES = tuple(c.name for c in CANDIDATES if c.name not in OPT_IN)


@dataclass
class Trial:
    """One candidate's row of the search table."""

    name: str
    passes: str  # the whole pipeline it ran
    precision: str
    verdict: str  # "kept", "within budget", "over budget", "skipped: why", "failed: why"
    drift: float | None = None
    speedup: float | None = None
    speedup_iqr: list[float] | None = None  # the spread of its per-round ratios against the original
    ms: float | None = None
    bytes: int | None = None
    seconds: float | None = None


def auto_optimize(source: str, output: str | Path, recipe: Recipe, options: OptimizeOptions | None = None,
                  candidates: tuple[str, ...] = DEFAULT_CANDIDATES,
                  on_candidate: Callable[[Candidate, str], None] | None = None) -> Report:
    """Build every applicable candidate of ``candidates`` from ``recipe`` (its passes are
    ignored), time them against the original on ``recipe``'s backend, and write the one
    ``_keep`` picks. The report's ``auto`` section holds the search table; ``on_candidate``
    is told before each build, with the pipeline it runs (the CLI prints a header over its
    pass lines)."""
    options = options or OptimizeOptions()
    output = Path(output)
    unknown = sorted(set(candidates) - {c.name for c in CANDIDATES})
    if unknown:
        raise RecipeError(f"unknown --auto candidate(s): {', '.join(unknown)}",
                          f"choose from {', '.join(c.name for c in CANDIDATES)}")
    chosen_candidates = [c for c in CANDIDATES if c.name in candidates]
    every_recipe = [_recipe_for(recipe, c, b.passes) for c in chosen_candidates for b in BASES]
    prepared = prepare(source, output, recipe, options, every_recipe)
    budget = prepared.choice.budget
    trials, built = [], {}
    base, base_note = BASES[0].passes, None
    for candidate in chosen_candidates:
        if not candidate.exact and base_note is None:  # the exact candidates are built: choose the base
            base, base_note = _choose_base(prepared, built)
        candidate_recipe = _recipe_for(recipe, candidate, base)
        trial = Trial(candidate.name, candidate.pipeline(base), candidate.precision, verdict="")
        trials.append(trial)
        why_not = _skip_reason(candidate, prepared, candidate_recipe)
        if why_not:
            trial.verdict = f"skipped: {why_not}"
            continue
        if on_candidate is not None:
            on_candidate(candidate, trial.passes)
        started = time.perf_counter()
        try:
            result = build(prepared, candidate_recipe, options.instruments)
        except PassFailure as e:  # one candidate's failure is a row of the table, not the end of the search
            trial.verdict = f"failed: {e.problem}"
            continue
        finally:
            trial.seconds = time.perf_counter() - started
        ran = result.runtime["precision"] if result.runtime else "fp32"
        if ran != candidate.precision:
            trial.verdict = f"skipped: the backend compiled a {candidate.precision} hint to {ran} on this CPU"
            continue
        trial.drift, trial.bytes = result.drift, model_bytes(result.model.ir)
        trial.verdict = "within budget" if result.drift <= budget else "over budget"
        built[candidate.name] = result
    stats, others, as_is_precision = _time(prepared, recipe, built, options.latency_rounds)
    baseline = stats.pop("original")
    as_is = stats.pop(AS_IS, None)
    for trial in trials:
        if trial.name in stats:
            timing = speedup_summary(baseline, stats[trial.name])
            trial.ms, trial.speedup, trial.speedup_iqr = timing["after"], timing["speedup"], timing["speedup_iqr"]
    best = _keep(trials, stats)
    chosen = built[best.name]
    hints = [{"backend": name, "ms": s.median_ms, "vs_kept": best.ms / s.median_ms} for name, s in others.items()]
    # the kept artifact against the original as the runtime compiles it when told nothing: the user's alternative
    as_is_row = None if as_is is None else {"precision": as_is_precision, **speedup_summary(as_is, stats[best.name])}
    auto = {
        "candidates": [asdict(t) for t in trials],
        "kept": best.name,
        "base": {"passes": base, "why": base_note or "no candidate built on a base"},
        "budget": {"metric": prepared.choice.name, "max_drift": budget},
        "baseline_ms": baseline.median_ms,
        "other_backends": hints,
        "advice": _advice(best, stats[best.name], baseline, hints, recipe.backend) + _as_is_advice(best, as_is_row, trials, recipe),
    }
    latency = speedup_summary(baseline, stats[best.name])
    if as_is_row is not None:
        latency["as_is"] = as_is_row
    report = write(prepared, chosen, output, options, latency=latency, auto=auto)
    check_gates(report)
    return report


def _keep(trials: list[Trial], stats: dict[str, LatencyStats]) -> Trial:
    """The candidate to write: the first within budget in CANDIDATES' order (simplest first:
    ``fuse`` unless it failed) is the fallback; a later one replaces it only if it was faster
    than the fallback in most rounds of the interleaved run, and of those the fastest is kept.
    A gain within the noise is not worth a lossier or larger artifact."""
    passing = [t for t in trials if t.verdict == "within budget"]
    if not passing:
        tried = "; ".join(f"{t.name} {t.drift:.3g}" if t.drift is not None else f"{t.name} {t.verdict}" for t in trials)
        raise AccuracyBudgetExceeded(f"no --auto candidate is within the budget (drift per candidate: {tried})",
                                     "relax --max-drift, or give other --auto-candidates")
    fallback = passing[0]
    faster = [t for t in passing[1:] if consistently_faster(stats[t.name], stats[fallback.name])]
    for trial in passing[1:]:
        if trial not in faster:
            trial.verdict = f"within budget; no gain over {fallback.name}"
    best = min(faster, key=lambda t: t.ms) if faster else fallback
    best.verdict = "kept"
    return best


def _advice(best: Trial, kept: LatencyStats, original: LatencyStats, hints: list[dict], backend: str) -> list[str]:
    """What the search table alone does not say: another backend much faster here, or nothing
    faster than the original model itself."""
    advice = [f"{h['backend']} runs the original model {h['vs_kept']:.2f}x faster than the kept artifact runs on "
              f"{backend} here: try --auto --backend {h['backend']}" for h in hints if h["vs_kept"] >= OTHER_BACKEND_HINT]
    if not consistently_faster(kept, original):
        advice.append(f"no candidate ran faster than the original model on {backend} beyond the noise: the artifact "
                      f"is {best.name}'s ({best.speedup:.2f}x); the original serves as well")
    return advice


def _as_is_advice(best: Trial, as_is: dict | None, trials: list[Trial], recipe: Recipe) -> list[str]:
    """A line where the original, compiled as the backend compiles it when told nothing, runs
    as fast as the kept artifact: the user's alternative, and why the search did not take it."""
    if as_is is None or as_is["verdict"] == "faster":
        return []
    precision = as_is["precision"]
    tried = next((t for t in trials if t.precision == precision and t.drift is not None), None)
    if best.precision == precision:
        why = f"the kept artifact runs {precision} too, and its passes add no speed to what {recipe.backend} does itself"
    elif tried is None:
        why = f"try --inference-precision {precision}"
    elif tried.verdict == "over budget":
        why = f"{tried.name} went over the accuracy budget here (drift {tried.drift:.3g}), so the artifact keeps {best.precision}"
    else:
        why = f"{tried.name} was within budget but no faster than {best.name} beyond the noise"
    line = (f"{recipe.backend} with its own defaults ({precision} on this CPU) runs the original model at least as fast as "
            f"the kept artifact ({best.name} runs {as_is['speedup']:.2f}x as fast as that, {as_is['verdict']}): {why}")
    return [line]


def _choose_base(prepared: Prepared, built: dict[str, Built]) -> tuple[str, str]:
    """The exact pipeline the lossy candidates build on, and why: opset+fuse where it was
    built within budget and ran faster than fuse in most rounds on the target, else fuse."""
    fuse, upgraded = BASES
    usable = {name for name in (fuse.name, upgraded.name) if name in built and built[name].drift <= prepared.choice.budget}
    if upgraded.name not in usable:
        return fuse.passes, f"{upgraded.name} was not built within budget"
    if fuse.name not in usable:
        return upgraded.passes, f"{fuse.name} was not built within budget"
    measure, feed = prepared.measure, prepared.evaluation.feeds()[0]
    sessions = {name: measure.session(built[name].model.ir, built[name].backend) for name in (fuse.name, upgraded.name)}
    return _base_by_timing(measure_interleaved(sessions, feed, rounds=MIN_ROUNDS))


def _base_by_timing(stats: dict[str, LatencyStats]) -> tuple[str, str]:
    """opset+fuse's pipeline if it ran faster than fuse's in most rounds, else fuse's; and why."""
    fuse, upgraded = BASES
    timing = f"{stats[upgraded.name].median_ms:.3f} ms vs {stats[fuse.name].median_ms:.3f} ms"
    if consistently_faster(stats[upgraded.name], stats[fuse.name]):
        return upgraded.passes, f"{upgraded.name} ran faster than {fuse.name} in most of {stats[fuse.name].rounds} rounds ({timing})"
    return fuse.passes, f"{upgraded.name} was not faster than {fuse.name} beyond the noise ({timing})"


def _recipe_for(base: Recipe, candidate: Candidate, base_passes: str) -> Recipe:
    data = base.model_dump(mode="json", exclude_none=True)
    data["passes"] = parse_pipeline(candidate.pipeline(base_passes))
    data["target"] = {**data.get("target", {}), "precision": candidate.precision}
    return Recipe.model_validate(data)


def _skip_reason(candidate: Candidate, prepared: Prepared, recipe: Recipe) -> str | None:
    """Why ``candidate`` does not apply to this model, data and backend (None: it does)."""
    backend = get_backend(recipe.backend)
    if candidate.precision not in type(backend).precisions_run:
        return f"{recipe.backend} has no {candidate.precision} runtime"
    if prepared.calibration is None and any(p.requires_calibration() for p in recipe.build_passes()):
        return "needs calibration data (--calib)"
    model = prepared.model.ir
    if candidate.name == "opset+fuse" and model.opset_imports.get("", 0) >= 17:
        return f"the model is at opset {model.opset_imports.get('', 0)} already"
    if candidate.name == "int8-all-ops":
        others = set(other_int8_ops(backend.capabilities.int8_ops)) & {node.op_type for node in model.graph}
        if not others:
            return f"the model has none of the other ops {recipe.backend} runs in int8"
    if candidate.name == "int4" and (share := _matmul_weight_share(model)) < MATMUL_HEAVY:
        return f"MatMul/Gemm hold {share:.0%} of the weights (int4 is for MatMul-heavy models)"
    return None


def _matmul_weight_share(model: ir.Model) -> float:
    """Of the constant weights that layers compute with (Conv, ConvTranspose, MatMul, Gemm;
    not lookup tables such as embeddings), the share MatMul/Gemm read (directly, or through
    the Transpose/Cast an exporter puts in front of a weight)."""

    def size(value: ir.Value) -> int:
        return int(np.prod(value.shape.dims)) if value.shape is not None and value.shape.is_static() else 0

    def weight(value: ir.Value | None) -> ir.Value | None:
        while value is not None and not value.is_initializer():
            node = value.producer()
            if node is None or node.op_type not in ("Transpose", "Cast"):
                return None
            value = node.inputs[0]
        return value

    def weights(op_types: tuple[str, ...]) -> int:
        found = {id(w): w for node in model.graph if node.op_type in op_types
                 for w in [weight(v) for v in node.inputs[:2]] if w is not None}
        return sum(size(w) for w in found.values())

    total = weights(("MatMul", "Gemm", "Conv", "ConvTranspose"))
    return weights(("MatMul", "Gemm")) / total if total else 0.0


def _time(prepared: Prepared, recipe: Recipe, built: dict[str, Built],
          rounds: int) -> tuple[dict[str, LatencyStats], dict[str, LatencyStats], str | None]:
    """Latency of the original and every built candidate on the recipe's backend, of the
    original on every other available backend, and (under AS_IS, with its precision) of the
    original as the backend compiles it when told nothing where that differs from the
    target's precision (OpenVINO: bf16 on CPUs that run it), all in one interleaved run."""
    measure, feed = prepared.measure, prepared.evaluation.feeds()[0]
    backend = get_backend(recipe.backend, recipe.target.load(prepared.costs))
    sessions = {"original": backend.create_session(prepared.model.ir)}
    as_is = as_is_session(backend, prepared.model.ir)
    if as_is is not None:
        sessions[AS_IS] = as_is
    sessions.update({name: measure.session(b.model.ir, b.backend) for name, b in built.items()})
    others = {}
    for name, cls in available_backends().items():
        if name == recipe.backend or name not in ("cpu", "openvino") or not cls().available()[0]:
            continue
        try:
            sessions[f"backend:{name}"] = get_backend(name).create_session(prepared.model.ir)
            others[name] = f"backend:{name}"
        except Exception as e:  # noqa: BLE001 (another runtime that cannot load the model is only no hint)
            logger.info("--auto: %s cannot run the original model: %s", name, first_line(e))
    stats = measure_interleaved(sessions, feed, rounds=max(rounds, MIN_ROUNDS))
    return ({k: v for k, v in stats.items() if not k.startswith("backend:")}, {name: stats[key] for name, key in others.items()},
            as_is.precision if as_is is not None else None)
