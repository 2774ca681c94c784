#!/usr/bin/env python
"""Does the default drift metric track the task? int8 variants of each real model, scored both ways.

    python bench/metric_study.py collect --models yolov8n ppocr_rec ...   # build variants, save their outputs
    python bench/metric_study.py analyze [--write]                         # score them; --write: docs section

For each real model, int8 variants of graded quality are built from the fused model the
default recipe quantizes (``fuse`` then ``quantize{mode=int8}``, calibrated on 12 of
bench/run.py's 16 calibration feeds, as ``onnxsmith optimize`` splits them), with the
default plan and with worse ones (percentile ranges, no speed rule, ONNX Runtime's full CPU
op set): every layer quantized, the 1, 2, 4, ... most sensitive layers (the guard's
ranking) left float, and (default plan) random fractions of the layers left float. Their
outputs, as ONNX Runtime CPU computes them, are saved for tests/tasks.py's held-out feeds
and for the 4 feeds the guard holds out, so every candidate metric is scored on the same
outputs afterwards: by the task metric on the held-out feeds, and by each candidate on the
guard's 4 feeds (what the guard sees) and on the held-out feeds.

A default metric is safe when no variant within the default budget (on the guard's feeds)
fails the task bound, and useful when the variants that pass the task fit the budget.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import tasks as task_lib  # noqa: E402

from onnxsmith.backend import get_backend  # noqa: E402
from onnxsmith.context import Context  # noqa: E402
from onnxsmith.data import Dataset, split_dataset  # noqa: E402
from onnxsmith.metrics import compare_outputs, default_drift, drift  # noqa: E402
from onnxsmith.measure import Measurements  # noqa: E402
from onnxsmith.passes.quantize.guard import DEFAULT_BUDGET, layer_sensitivity  # noqa: E402
from onnxsmith.passes.quantize.int8 import prepare_int8  # noqa: E402
from onnxsmith.registry import create_pass  # noqa: E402
from onnxsmith.runtime import make_session, run_all  # noqa: E402
from onnxsmith.sources import load_source  # noqa: E402

CACHE = Path.home() / ".cache" / "onnxsmith" / "metric_study2"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## drift metric vs task metric"
CALIBRATION = 16  # bench/run.py's calibration feeds; optimize holds a quarter out for the guard


# --- candidate generic metrics: (reference runs, candidate runs) -> drift (0 = identical) -----


def _pairs(reference, candidate):
    """Per output name, (reference, candidate) stacked over runs as float64."""
    for name in reference[0]:
        ref = np.concatenate([np.asarray(r[name], np.float64).reshape(-1, *np.shape(r[name])[1:]) for r in reference])
        got = np.concatenate([np.asarray(c[name], np.float64).reshape(-1, *np.shape(c[name])[1:]) for c in candidate])
        yield name, ref, got


def _along(array: np.ndarray, axis: int) -> np.ndarray:
    """[slices along ``axis``, everything else]: one row per index of ``axis``."""
    if array.ndim < 2:
        return array.reshape(1, -1)
    return np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)


def _rows(array: np.ndarray) -> np.ndarray:
    """[rows, last axis]."""
    return array.reshape(-1, array.shape[-1]) if array.ndim >= 2 else array.reshape(1, -1)


def channel_rel(aggregate, scale="rms", axis=1):
    def metric(reference, candidate):
        worst = 0.0
        for _, ref, got in _pairs(reference, candidate):
            r, g = _along(ref, axis), _along(got, axis)
            err = np.sqrt(np.mean((g - r) ** 2, axis=1))
            size = np.sqrt(np.mean(r**2, axis=1)) if scale == "rms" else np.max(np.abs(r), axis=1)
            floor = 1e-6 * max(float(size.max()), 1e-12)
            worst = max(worst, float(aggregate(err / (size + floor))))
        return worst
    return metric


def row_rel(aggregate):
    """Per row along the last axis, ||candidate - reference|| / ||reference||."""
    def metric(reference, candidate):
        worst = 0.0
        for _, ref, got in _pairs(reference, candidate):
            r, g = _rows(ref), _rows(got)
            norm = np.linalg.norm(r, axis=1)
            keep = norm > 1e-6 * max(float(norm.max()), 1e-12)
            if keep.any():
                worst = max(worst, float(aggregate(np.linalg.norm(g - r, axis=1)[keep] / norm[keep])))
        return worst
    return metric


def argmax_flips(reference, candidate):
    """Fraction of rows (last axis, when it has > 1 entry) whose argmax changed."""
    worst = 0.0
    for _, ref, got in _pairs(reference, candidate):
        if ref.ndim >= 2 and ref.shape[-1] > 1:
            worst = max(worst, float(np.mean(_rows(ref).argmax(axis=1) != _rows(got).argmax(axis=1))))
    return worst


def global_rel(reference, candidate):
    worst = 0.0
    for _, ref, got in _pairs(reference, candidate):
        worst = max(worst, float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12)))
    return worst


def _p95(x):
    return np.percentile(x, 95)


def _typed_parts(reference, candidate, active=0.05, aggregate="rms"):
    """(worst bounded part, worst unbounded part) over outputs: per channel (axis 1), channels whose
    reference values lie in [0, 1] give the RMS absolute error over their active elements (either
    side >= ``active``); other channels give their relative RMS error squared / 2 (1 - cosine)."""
    bounded = unbounded = 0.0
    for _, ref, got in _pairs(reference, candidate):
        r, g = _along(ref, 1), _along(got, 1)
        inside = (r.min(axis=1) >= -1e-6) & (r.max(axis=1) <= 1 + 1e-6)
        if inside.any():
            rb, gb = r[inside], g[inside]
            mask = np.maximum(np.abs(rb), np.abs(gb)) >= active
            if mask.any():
                err = (gb - rb)[mask]
                value = np.sqrt(np.mean(err**2)) if aggregate == "rms" else np.mean(np.abs(err))
                bounded = max(bounded, float(value))
        if (~inside).any():
            ru, gu = r[~inside], g[~inside]
            rel = np.sqrt(np.mean((gu - ru) ** 2, axis=1)) / np.maximum(np.sqrt(np.mean(ru**2, axis=1)), 1e-12)
            unbounded = max(unbounded, float(np.mean(rel**2) / 2))
    return bounded, unbounded


def typed_unbounded(reference, candidate):
    return _typed_parts(reference, candidate)[1]


def typed_bounded_mean(reference, candidate):
    return _typed_parts(reference, candidate, aggregate="mean")[0]


def channel_rms(reference, candidate):
    """The default before this study: per sample, the mean over channels of RMS error / RMS value."""
    return drift(compare_outputs(reference, candidate))


CANDIDATES = {
    "drift": default_drift,
    "channel_rms (before)": channel_rms,
    "probability part": typed_bounded_mean,
    "feature part": typed_unbounded,
    "ch_peak_mean": channel_rel(np.mean, "peak"),
    "ch_rms_max": channel_rel(np.max),
    "row_rel_mean": row_rel(np.mean),
    "row_rel_p95": row_rel(_p95),
    "argmax flips": argmax_flips,
    "global_rel (1/sqrt SQNR)": global_rel,
}


def stacked_dataset(feeds: list[dict[str, np.ndarray]]) -> Dataset:
    """Feeds stacked into one Dataset, as the pipeline takes calibration data."""
    return Dataset({name: np.stack([f[name] for f in feeds]) for name in feeds[0]}, "bench")


def fused_model(name: str, cache: Path = CACHE):
    """The original model after ``fuse``, cached on disk under a digest of the fuse code, so a
    changed rule never reuses a stale fused model."""
    import hashlib

    import onnx_ir as ir

    fuse_dir = Path(__file__).resolve().parents[1] / "passes" / "fuse"
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(fuse_dir.glob("*.py")))).hexdigest()[:12]
    path = cache / f"{name}.fused-{digest}.onnx"
    if not path.is_file():
        model = load_source(str(task_lib.get_task(name).model_path())).ir
        result = create_pass("fuse").run(model, Context(backend=get_backend("cpu")))
        path.parent.mkdir(parents=True, exist_ok=True)
        ir.save(result.model, str(path))
    return load_source(str(path)).ir


def guard_feeds(name: str) -> tuple[Dataset, Dataset]:
    """(calibration, guard evaluation) as ``onnxsmith optimize`` splits bench/run.py's feeds."""
    return split_dataset(stacked_dataset(task_lib.get_task(name).calibration(CALIBRATION)), seed=0)


def variants(name: str, builder, ranked: list[str], many: bool, seed: int = 0):
    """(label, names kept float) from coarse to nearly float (``many``: random subsets too)."""
    n = len(ranked)
    yield "all int8", []
    k = 1
    while k < n and (many or k <= 8):
        yield f"top {k} of {n} float", ranked[:k]
        k *= 2
    if not many:
        return
    rng = np.random.default_rng(seed)
    for fraction in (0.1, 0.25, 0.5):
        for s in range(2):
            count = max(1, int(round(fraction * n)))
            yield f"random {count} of {n} float ({s})", list(rng.choice(ranked, size=count, replace=False))


def collect(name: str) -> None:
    task = task_lib.get_task(name)
    out = CACHE / name
    out.mkdir(parents=True, exist_ok=True)
    held_out = task.evaluation(min(32, task.max_evaluation))
    calibration, guard_eval = guard_feeds(name)
    original = load_source(str(task.model_path())).ir
    reference_session = make_session(original, optimize=False)
    np.savez(out / "reference.npz", **_flatten(run_all(reference_session, held_out), run_all(reference_session, guard_eval.feeds())))
    backend = get_backend("cpu")
    model = fused_model(name)
    ctx = Context(backend=backend, calibration=calibration, evaluation=guard_eval)
    built = []
    for label, options, plan_options in PLANS:
        with plan_overrides(**plan_options):
            built.append((label, prepare_int8(create_pass("quantize", {"guard": False, **options}), model, ctx)))
    for plan_label, prepared in built:
        everything = prepared.build([])
        sensitivity = layer_sensitivity(Measurements(), prepared.float_model, everything, prepared.plan.layers, calibration.feeds())
        ranked = [layer for layer, _ in sorted(sensitivity.items(), key=lambda item: -item[1])]
        chosen = variants(name, prepared, ranked, plan_label == "default plan")
        for label, kept in chosen:
            tag = f"{plan_label}: {label}"
            path = out / (tag.replace(" ", "_").replace(":", "").replace("(", "").replace(")", "") + ".npz")
            if path.is_file():
                continue
            start = time.perf_counter()
            candidate = everything if not kept else prepared.build(kept)
            session = backend.create_session(candidate)
            held, guard = run_all(session, held_out), run_all(session, guard_eval.feeds())
            np.savez(path, **_flatten(held, guard), __meta__=json.dumps({"model": name, "variant": tag, "kept": kept}))
            print(f"{name}: {tag} ({time.perf_counter() - start:.1f} s)", flush=True)


# (label, quantize options, int8_plan.plan_int8 keyword overrides): the default plan, and
# plans without one of its rules, whose variants are worse
PLANS = (
    ("default plan", {}, {}),
    ("percentile ranges", {"calibration": "percentile"}, {}),
    ("no speed rule", {}, {"min_intensity": 0.0}),
    ("full CPU op set", {"ops": ["Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
                                 "GlobalAveragePool", "Resize", "Sigmoid", "LeakyRelu", "Softmax", "Transpose", "Reshape",
                                 "Squeeze", "Unsqueeze", "Split", "Gather", "Pad", "Slice", "Flatten"]}, {}),
)


@contextlib.contextmanager
def plan_overrides(**overrides):
    """int8's plan with some of plan_int8's keyword defaults overridden (a study's variant)."""
    import onnxsmith.passes.quantize.int8 as int8

    original = int8.plan_int8
    int8.plan_int8 = functools.partial(original, **overrides)
    try:
        yield
    finally:
        int8.plan_int8 = original


def _flatten(held: list[dict], guard: list[dict]) -> dict[str, np.ndarray]:
    arrays = {}
    for prefix, runs in (("held", held), ("guard", guard)):
        for i, run in enumerate(runs):
            for key, value in run.items():
                arrays[f"{prefix}/{i}/{key}"] = value
    return arrays


def _unflatten(npz, prefix: str) -> list[dict[str, np.ndarray]]:
    runs: dict[int, dict] = {}
    for key in npz.files:
        if key.startswith(prefix + "/"):
            _, i, name = key.split("/", 2)
            runs.setdefault(int(i), {})[name] = npz[key]
    return [runs[i] for i in sorted(runs)]


def analyze(models: list[str]) -> list[dict]:
    rows = []
    for name in models:
        folder = CACHE / name
        if not (folder / "reference.npz").is_file():
            continue
        task = task_lib.get_task(name)
        held_out = task.evaluation(min(32, task.max_evaluation))
        with np.load(folder / "reference.npz") as npz:
            ref_held, ref_guard = _unflatten(npz, "held"), _unflatten(npz, "guard")
        for path in sorted(folder.glob("*.npz")):
            if path.name == "reference.npz":
                continue
            with np.load(path) as npz:
                meta = json.loads(str(npz["__meta__"]))
                held, guard = _unflatten(npz, "held"), _unflatten(npz, "guard")
            scores = task.score(ref_held, held, held_out)
            row = {"model": name, "variant": meta["variant"], "kept": len(meta["kept"]), "task_metric": task.metric,
                   "task": scores[task.metric], "passed": task.passed(scores)}
            for key, metric in CANDIDATES.items():
                row[key] = metric(ref_guard, guard)
                row[key + "@held"] = metric(ref_held, held)
            rows.append(row)
    return rows


def separation(rows: list[dict], key: str) -> tuple[float, int, int]:
    """(safe: the smallest value among variants that fail their task, passing variants below it,
    passing variants in all): a budget just below ``safe`` lets no failing variant through."""
    failing = [r[key] for r in rows if not r["passed"]]
    safe = min(failing, default=float("inf"))
    passing = [r[key] for r in rows if r["passed"]]
    return safe, sum(1 for v in passing if v < safe), len(passing)


def render(rows: list[dict], command: str) -> str:
    """The docs section: per candidate, how well it separates variants that pass their task
    from those that fail; then one row per variant."""
    keys = list(CANDIDATES)
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = [
        SECTION, "",
        f"`{command}`. " + __doc__.split("\n\n")[2].replace("\n", " "), "",
        "Per candidate metric (on the guard's 4 held-out calibration feeds): the smallest value of any variant that "
        "fails its task (a budget must stay below it), and how many task-passing variants lie below that value; "
        f"then, at the default budget {DEFAULT_BUDGET:g}, failing variants let through and passing variants accepted.", "",
        "| candidate | fails from | passing below it | at budget: failing let through | at budget: passing accepted | "
        + " | ".join(f"{m}: fails from" for m in models) + " |",
        "|---|--:|--:|--:|--:|" + "--:|" * len(models),
    ]
    for key in keys:
        safe, below, total = separation(rows, key)
        through = sum(1 for r in rows if not r["passed"] and r[key] <= DEFAULT_BUDGET)
        accepted = sum(1 for r in rows if r["passed"] and r[key] <= DEFAULT_BUDGET)
        per_model = [separation([r for r in rows if r["model"] == m], key)[0] for m in models]
        lines.append(f"| {key}{' (default)' if CANDIDATES[key] is default_drift else ''} | {safe:.3g} | {below} of {total} | "
                     f"{through} | {accepted} of {total} | " + " | ".join(f"{v:.3g}" for v in per_model) + " |")
    through = [r for r in rows if not r["passed"] and r["drift"] <= DEFAULT_BUDGET]
    lines += ["", f"Variants within the default budget that fail their task ({len(through)}):", ""]
    lines += [f"- {r['model']}, {r['variant']}: {r['task_metric']} {r['task']:.3f}, drift {r['drift']:.3g}" for r in through]
    lines += ["", "| model | variant | float layers | task metric | passes | " + " | ".join(keys) + " |",
              "|---|---|--:|---|---|" + "--:|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['kept']} | {r['task_metric']} {r['task']:.3f} | "
                     f"{'yes' if r['passed'] else 'no'} | " + " | ".join(f"{r[k]:.3g}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["collect", "analyze"])
    parser.add_argument("--models", nargs="*", default=list(task_lib.TASKS))
    parser.add_argument("--write", action="store_true", help="analyze: write the docs section")
    args = parser.parse_args(argv)
    if args.action == "collect":
        for name in args.models:
            collect(name)
        return 0
    rows = analyze(args.models)
    (CACHE / "rows.json").write_text(json.dumps(rows, indent=1, default=float))
    text = render(rows, "python bench/metric_study.py collect && python bench/metric_study.py analyze --write")
    print(text)
    if args.write:
        from fuse_bench import write_section

        write_section(DOC, text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
