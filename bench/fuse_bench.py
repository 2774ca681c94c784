#!/usr/bin/env python
"""onnxsmith's ``fuse`` pass against onnxslim and onnxsim, on the real models of DESIGN.md.

    python bench/fuse_bench.py [--models ppocr_det,ppocr_rec,ppocr_cls,yolov8n,minilm]
                               [--passes fuse] [--quick] [--rounds N] [--doc docs/benchmarks.md]

For every model: the original, ``onnxslim.slim(model)``, ``onnxsim.simplify(model)`` and
``onnxsmith optimize --passes PASSES`` (through the library, with real calibration data);
their node counts and op histograms; each one's outputs compared with the original's on
real held-out inputs (max abs error, all run with ONNX Runtime's graph optimizations off,
so the runtime's own fusions cannot hide a difference); and their latency on ONNX Runtime
CPU with default session options (graph optimizations on, as a user deploys), measured in
one run, interleaved, after warm-up (onnxsmith.latency.measure_interleaved), beside a
second session of the original (an A/A control: the noise floor). The tables go to the
section "## fuse vs onnxslim" of docs/benchmarks.md; the rest of that file is kept.

Inputs (tests/realmodels.py): PaddleOCR det: rendered text pages for calibration, the
scans page.png and text.png of scikit-image at rapidocr's det size for evaluation and
timing; rec/cls: rendered text lines for calibration, the lines cut from page.png for
evaluation and timing (batch 6, rapidocr's rec/cls batch); YOLOv8n: scikit-image photographs
(10 for calibration, 5 held out), batch 1 at 320x320; MiniLM: sentences from installed
packages' READMEs, timed at batch 1, sequence length 128, on a real text of 128 tokens (no
padding), and again on one short sentence padded to 128.

Needs the ``bench`` extra (``pip install -e .[bench]``: onnxslim, onnxsim, transformers, tokenizers)
and torch for the MiniLM export; ``--quick`` skips MiniLM when its export is not cached.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import shlex
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # realmodels.py, tasks.py: shared with the tests
import realmodels as rm  # noqa: E402
from matmul_floor import matmul_floor  # noqa: E402

if TYPE_CHECKING:
    from onnxsmith.backend import Session

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## fuse vs onnxslim"
ALL_MODELS = ("ppocr_det", "ppocr_rec", "ppocr_cls", "yolov8n", "minilm")
CONTROL = "original (A/A control)"
FLOOR = "MatMul floor"
ROUNDS, QUICK_ROUNDS, WARMUP = 41, 7, 3
MIN_BLOCK_S = 0.05  # a timed sample averages back-to-back runs up to this long (small models are noisy)
CPU_ROUNDS = 11  # process CPU time barely moves with other load: fewer rounds do
TOOLS = ("onnxslim", "onnxsim", "ours")
SEQ_LEN = 128
LINE_BATCH = 6  # rapidocr's rec_batch_num and cls_batch_num


# --- real data per model ------------------------------------------------------------------


@dataclass
class Case:
    """One model with its data: calibration arrays (samples on the first axis, for the
    .npz onnxsmith reads), held-out feeds, the feed that is timed (``timed_as`` says what
    it is), and other feeds timed in runs of their own."""

    name: str
    path: Path
    calibration: dict[str, np.ndarray]
    held_out: list[dict[str, np.ndarray]]
    timed: dict[str, np.ndarray]
    data: str
    timed_as: str = ""
    also_timed: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    floor: bool = False  # also time its MatMul floor (bench/matmul_floor.py)


def _det_case() -> Case:
    scans = rm.text_photos()
    held = [{"x": rm.det_input(img, rm.det_size(*img.shape[:2]))} for img in scans.values()]
    shape = "x".join(map(str, held[0]["x"].shape))
    return Case(
        "ppocr_det", rm.real_model("ppocr_det"),
        {"x": rm.real_image_batch("det", 8, seed=0, size=(160, 320))},
        held, held[0],
        f"calibration: 8 rendered pages at 160x320; held out: scikit-image page.png and text.png at rapidocr's det size; timed: page.png, {shape}",
    )


def _line_case(name: str, kind: str, shape: tuple[int, int, int]) -> Case:
    lines = np.concatenate([rm.line_input(line, shape) for line in rm.page_lines()])
    return Case(
        name, rm.real_model(name),
        {"x": rm.real_image_batch(kind, 8, seed=0)},
        [{"x": lines}], {"x": lines[:LINE_BATCH]},
        f"calibration: 8 rendered text lines; held out: the {len(lines)} lines of scikit-image page.png as one batch; "
        f"timed: {LINE_BATCH} of them, {LINE_BATCH}x{'x'.join(map(str, shape))}",
    )


def _yolo_case() -> Case:
    pictures = rm.photos()
    names = list(pictures)
    calibration, held = names[:10], names[10:]
    return Case(
        "yolov8n", rm.real_model("yolov8n"),
        {"images": rm.yolo_input([pictures[n] for n in calibration])},
        [{"images": rm.yolo_input(pictures[n])} for n in held],
        {"images": rm.yolo_input(pictures["astronaut"])},
        f"calibration: 10 scikit-image photos; held out: {', '.join(held)}; timed: astronaut, 1x3x320x320 (nudenet's preprocessing)",
    )


def minilm_full_input(seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    """One real text of exactly ``seq_len`` tokens, no padding: README sentences joined
    until the tokenizer truncates them."""
    for count in (20, 40, 80):
        feed = rm.minilm_inputs([" ".join(rm.sentences(count, start=24))], seq_len)
        if feed["attention_mask"].all():
            return feed
    raise RuntimeError(f"80 sentences are fewer than {seq_len} tokens")


def _minilm_case() -> Case:
    path = rm.real_model("minilm")
    return Case(
        "minilm", path,
        rm.minilm_inputs(rm.sentences(16), SEQ_LEN),
        [rm.minilm_inputs(rm.sentences(8, start=16), SEQ_LEN), minilm_full_input()],
        minilm_full_input(),
        f"calibration: 16 README sentences; held out: 8 others as one padded batch, and one text of {SEQ_LEN} tokens; "
        f"timed: README sentences joined into one text of {SEQ_LEN} tokens (1x{SEQ_LEN}, no padding), and one short "
        f"sentence padded to {SEQ_LEN} (1x{SEQ_LEN})",
        timed_as=f"{SEQ_LEN} real tokens", floor=True,
        also_timed={f"1 sentence padded to {SEQ_LEN}": rm.minilm_inputs(rm.sentences(1, start=24), SEQ_LEN)},
    )


CASES: dict[str, Callable[[], Case]] = {
    "ppocr_det": _det_case,
    "ppocr_rec": lambda: _line_case("ppocr_rec", "rec", rm.REC_SHAPE),
    "ppocr_cls": lambda: _line_case("ppocr_cls", "cls", rm.CLS_SHAPE),
    "yolov8n": _yolo_case,
    "minilm": _minilm_case,
}


# --- the three models ---------------------------------------------------------------------


@dataclass
class Variant:
    tool: str
    path: Path | None = None
    seconds: float | None = None  # how long the tool took to produce it
    error: str | None = None
    nodes: int | None = None
    ops: Counter = field(default_factory=Counter)
    max_abs: float | None = None
    latency_ms: float | None = None  # on the case's main timed feed
    notes: list[str] = field(default_factory=list)
    runtime_ops: Counter = field(default_factory=Counter)  # the graph ONNX Runtime CPU runs, after its own optimizations


@dataclass
class Timing:
    """One interleaved run on one feed: median ms per tool, and the A/A control's ratio."""

    label: str
    ms: dict[str, float]
    aa_ratio: float
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU time per run at 1 intra-op thread


def run_onnxslim(src: Path, out: Path) -> Variant:
    import onnxslim

    start = time.perf_counter()
    slim = onnxslim.slim(str(src))
    seconds = time.perf_counter() - start
    if slim is None:
        raise RuntimeError("onnxslim.slim returned None")
    onnx.save(slim, str(out))
    return Variant("onnxslim", out, seconds)


def run_onnxsim(src: Path, out: Path) -> Variant:
    import onnxsim

    start = time.perf_counter()
    simplified, ok = onnxsim.simplify(str(src))
    seconds = time.perf_counter() - start
    if not ok:
        raise RuntimeError("onnxsim.simplify: its own check failed")
    onnx.save(simplified, str(out))
    return Variant("onnxsim", out, seconds)


def run_ours(src: Path, out: Path, passes: list[str], calibration: dict[str, np.ndarray]) -> Variant:
    from onnxsmith.optimize import OptimizeOptions, optimize
    from onnxsmith.recipe import validate_recipe

    npz = out.with_suffix(".calibration.npz")
    np.savez(npz, **calibration)
    recipe = validate_recipe({"passes": passes, "calibration": {"data": str(npz)}})
    start = time.perf_counter()
    report = optimize(str(src), out, recipe, OptimizeOptions(latency_rounds=0))
    variant = Variant("ours", out, time.perf_counter() - start)
    for record in report.passes:
        counts = ", ".join(f"{k} {v}" for k, v in record.counts.items() if v)
        variant.notes.append(f"{record.name}: {record.nodes_before} -> {record.nodes_after} nodes" + (f" ({counts})" if counts else ""))
    return variant


def op_histogram(path: Path) -> Counter:
    """Op types of every node (subgraphs and functions included), ``domain::Op`` outside ai.onnx."""
    import onnx_ir as ir

    from onnxsmith.graph_stats import graph_stats

    return Counter(graph_stats(ir.load(path)).op_histogram)


def session(path: Path, *, optimized: bool, threads: int = 0) -> ort.InferenceSession:
    """A CPU session with default options, except that intra-op threads do not spin.

    With spinning on (ORT's default), the threads of the session that just ran keep
    spinning while the next one runs: on 2 cores, three interleaved sessions of the *same*
    model then differ by up to 1.5x, in whatever order they run. Without it they agree
    within a few percent.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def runtime_histogram(path: Path, saved: Path) -> Counter:
    """Op counts of the graph ONNX Runtime CPU runs for ``path`` (its optimized graph, saved
    to ``saved``; the node layout ops it adds, ReorderInput/Output, included)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(saved)
    ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(saved), load_external_data=False).graph.node)


def outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    s = session(path, optimized=False)
    names = [o.name for o in s.get_outputs()]
    return [dict(zip(names, s.run(names, feed), strict=True)) for feed in feeds]


def max_abs_error(reference: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]]) -> float:
    """Largest |difference| over every output of every held-out feed (outputs matched by
    name, or by position when a tool renamed them)."""
    worst = 0.0
    for ref, out in zip(reference, got, strict=True):
        pairs = [(ref[n], out[n]) for n in ref] if set(ref) == set(out) else list(zip(ref.values(), out.values(), strict=True))
        for a, b in pairs:
            if a.shape != b.shape:
                return float("inf")
            if a.size:
                worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    return worst


def bench_model(case: Case, passes: list[str], rounds: int, work: Path) -> tuple[dict[str, Variant], list[Timing]]:
    from onnxsmith.latency import measure_interleaved

    variants = {"original": Variant("original", case.path)}
    makers = {
        "onnxslim": lambda: run_onnxslim(case.path, work / f"{case.name}.onnxslim.onnx"),
        "onnxsim": lambda: run_onnxsim(case.path, work / f"{case.name}.onnxsim.onnx"),
        "ours": lambda: run_ours(case.path, work / f"{case.name}.onnxsmith.onnx", passes, case.calibration),
    }
    for tool, make in makers.items():
        try:
            variants[tool] = make()
        except Exception as e:  # a tool failing on a real model is a result too
            traceback.print_exc()
            variants[tool] = Variant(tool, error=f"{type(e).__name__}: {_one_line(str(e))}")
        print(f"  {tool}: " + (f"{variants[tool].seconds:.1f} s" if variants[tool].error is None else variants[tool].error), flush=True)

    ok = {t: v for t, v in variants.items() if v.error is None}
    for v in ok.values():
        v.ops = op_histogram(v.path)
        v.nodes = sum(v.ops.values())
    reference = outputs(case.path, case.held_out)
    for tool in TOOLS:
        if tool in ok:
            try:
                ok[tool].max_abs = max_abs_error(reference, outputs(ok[tool].path, case.held_out))
            except Exception as e:
                ok[tool].error = f"does not run: {type(e).__name__}: {_one_line(str(e))}"
    ok = {t: v for t, v in ok.items() if v.error is None}
    for v in ok.values():
        v.runtime_ops = runtime_histogram(v.path, work / f"{case.name}.{v.tool}.runtime.onnx")
    sessions = {t: session(v.path, optimized=True) for t, v in ok.items()}
    # A second session of the original, timed alongside: its ratio to the first is the
    # noise floor of this measurement (an A/A test).
    sessions[CONTROL] = session(case.path, optimized=True)
    timings = []
    single = {t: session(v.path, optimized=True, threads=1) for t, v in ok.items()}
    if case.floor:
        floor_path, floor_feed, products = matmul_floor(case.path, case.timed, work / f"{case.name}.floor.onnx")
        sessions[FLOOR] = _FixedFeed(session(floor_path, optimized=True), floor_feed)
        single[FLOOR] = _FixedFeed(session(floor_path, optimized=True, threads=1), floor_feed)
        variants["original"].notes.append(f"MatMul floor: its {products} MatMul/Gemm nodes alone, at the timed feed's shapes")
    for label, feed in {case.timed_as: case.timed, **case.also_timed}.items():
        if label != case.timed_as:
            sessions.pop(FLOOR, None)
            single.pop(FLOOR, None)
        timed = measure_interleaved(sessions, feed, rounds=rounds, warmup=WARMUP, min_block_s=MIN_BLOCK_S)
        timings.append(Timing(label, {t: timed[t].median_ms for t in [*ok, FLOOR] if t in timed},
                              timed["original"].median_ms / timed[CONTROL].median_ms,
                              cpu_time_interleaved(single, feed, rounds=min(rounds, CPU_ROUNDS))))
    for t in ok:
        ok[t].latency_ms = timings[0].ms[t]
    return variants, timings


class _FixedFeed:
    """A session that runs on its own feed whatever it is given (the MatMul floor's inputs
    are not the model's), so it can be timed in the same interleaved rounds."""

    def __init__(self, inner: ort.InferenceSession, feed: dict[str, np.ndarray]) -> None:
        self.inner, self.feed = inner, feed

    def run(self, names, feed):
        return self.inner.run(names, self.feed)


def cpu_time_interleaved(sessions: dict[str, Session], feed: dict[str, np.ndarray], *, rounds: int) -> dict[str, float]:
    """Median process CPU time of one run per session, in ms, interleaved like the latency.

    With one intra-op thread this is the work a model costs, and unlike wall time it hardly
    changes when other processes share the cores: a check on the latency medians of a busy
    machine (it cannot show a multi-threaded session's synchronization costs)."""
    names = list(sessions)
    for name in names:  # warm-up
        sessions[name].run(None, feed)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.process_time()
            sessions[name].run(None, feed)
            samples[name].append((time.process_time() - start) * 1000.0)
    return {n: float(np.median(v)) for n, v in samples.items()}


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the Markdown section -----------------------------------------------------------------


def _fmt_ms(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.2f}"


def _fmt_err(v: Variant) -> str:
    if v.error is not None:
        return "failed"
    return "0" if v.max_abs == 0 else f"{v.max_abs:.1e}"


def _ratio(slower: float | None, faster: float | None) -> str:
    return "-" if slower is None or faster is None else f"{slower / faster:.2f}x"


def _nodes(v: Variant) -> str:
    return "failed" if v.error is not None else str(v.nodes)


def op_diff(theirs: Variant, ours: Variant) -> str:
    """Ops whose counts differ between another tool's output and ours, as ``Op theirs/ours``."""
    if theirs.error is not None or ours.error is not None:
        return "n/a (a tool failed)"
    ops = sorted(set(theirs.ops) | set(ours.ops), key=lambda op: (-abs(theirs.ops[op] - ours.ops[op]), op))
    diff = [f"{op} {theirs.ops[op]}/{ours.ops[op]}" for op in ops if theirs.ops[op] != ours.ops[op]]
    return ", ".join(diff) if diff else "identical op counts"


def target_verdicts(case: Case, v: dict[str, Variant], timings: list[Timing]) -> list[str]:
    """The issue's targets on this model: nodes and latency no worse than onnxslim's (a
    latency ratio within the A/A control's distance from 1 is even, not worse), and for
    the transformer, fused at least 1.3x faster than the original."""
    slim, ours = v["onnxslim"], v["ours"]
    if ours.error is not None:
        return [f"{case.name}: ours failed"]
    out = []
    if slim.error is None:
        word = "met" if ours.nodes <= slim.nodes else "NOT met"
        out.append(f"{case.name}: nodes ours {ours.nodes} vs onnxslim {slim.nodes}: {word}")
        same = "identical op counts: the same kernels run, so latency differences between the two are noise" if ours.runtime_ops == slim.runtime_ops else op_diff(
            Variant("onnxslim", ops=slim.runtime_ops), Variant("ours", ops=ours.runtime_ops))
        out.append(f"{case.name}: what ONNX Runtime CPU runs after its own optimizations: ours {sum(ours.runtime_ops.values())} nodes, "
                   f"onnxslim {sum(slim.runtime_ops.values())} ({same})")
    same_kernels = slim.error is None and ours.runtime_ops == slim.runtime_ops
    for t in timings:
        where = f"{case.name} ({t.label})" if t.label else case.name
        if "onnxslim" in t.ms and "ours" in t.ms:
            ratio, noise = t.ms["onnxslim"] / t.ms["ours"], abs(t.aa_ratio - 1)
            word = "met" if ratio >= 1 else ("even within the A/A noise" if ratio >= 1 - noise else "NOT met")
            if same_kernels and ratio < 1:
                word = "even: ONNX Runtime runs the same op counts for both, the gap is noise"
            out.append(f"{where}: latency ours vs onnxslim {ratio:.2f}x (A/A control {t.aa_ratio:.2f}x): {word}")
        if case.name == "minilm" and "ours" in t.ms:
            speedup = t.ms["original"] / t.ms["ours"]
            cpu = t.cpu_ms.get("original", math.nan) / t.cpu_ms.get("ours", math.nan)
            out.append(f"{where}: fused vs unfused {speedup:.2f}x latency, {cpu:.2f}x CPU time at 1 thread "
                       f"(target 1.30x): {'met' if speedup >= 1.3 else 'NOT met'}")
        if FLOOR in t.ms:
            cpu = t.cpu_ms.get("original", math.nan) / t.cpu_ms.get(FLOOR, math.nan)
            out.append(f"{where}: the original vs its MatMul floor (no rewrite that keeps every product can beat it): "
                       f"{t.ms['original'] / t.ms[FLOOR]:.2f}x latency ({_fmt_ms(t.ms[FLOOR])} ms), {cpu:.2f}x CPU time at 1 thread "
                       f"({_fmt_ms(t.cpu_ms.get(FLOOR))} ms)")
    return out


def machine_facts() -> list[str]:
    """The CPU and the versions that every bench table names (onnxslim only where installed:
    the benches that do not run it need only the project's own dependencies)."""
    try:
        import onnxslim

        slim = f"onnxslim {onnxslim.__version__}, "
    except ImportError:
        slim = ""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from onnxsmith.target import detect_cpu

    return [
        f"CPU: {cpu} ({detect_cpu().isa}), {os.cpu_count()} logical cores (nproc {len(os.sched_getaffinity(0))})",
        f"Python {platform.python_version()}, onnxruntime {ort.__version__}, {slim}"
        f"onnx {onnx.__version__}, onnxsmith {_onnxsmith_version()}",
    ]


def _onnxsmith_version() -> str:
    from onnxsmith import __version__

    return __version__


def _onnxsim_version() -> str:
    try:
        from importlib.metadata import version

        return version("onnxsim")
    except Exception:
        return "unknown"


def _timed_rows(results: list[tuple[Case, dict[str, Variant], list[Timing]]]):
    """(row label, Timing) for every timed input of every model, in order."""
    for case, _, timings in results:
        for t in timings:
            yield (f"{case.name} ({t.label})" if t.label else case.name), t


def render_section(results: list[tuple[Case, dict[str, Variant], list[Timing]]], passes: list[str], rounds: int, command: str) -> str:
    ours_label = f"ours (`--passes {','.join(passes)}`)"
    lines = [
        SECTION,
        "",
        f"onnxsmith `optimize --passes {','.join(passes)}` (\"ours\") against `onnxslim.slim(model)` and",
        "`onnxsim.simplify(model)`, on the real models of DESIGN.md.",
        "",
        "- Nodes: every node, Constant nodes included (onnxsim keeps weights as Constant nodes by default).",
        "- Max abs err: the largest output difference from the original on held-out real inputs,",
        "  every model run with ONNX Runtime's graph optimizations off.",
        "- Latency: ONNX Runtime CPU, default session options (graph optimizations on, as",
        "  deployed, the same thread settings for every model) except intra-op thread spinning,",
        "  turned off: with it on, three sessions of one identical model timed interleaved in one",
        f"  process differ by up to 1.5x on 2 cores. Median of {rounds} interleaved rounds (original,",
        "  onnxslim, onnxsim, ours, and a second session of the original as an A/A control; the",
        f"  order alternates every round; a sample averages back-to-back runs up to {MIN_BLOCK_S * 1000:.0f} ms) after",
        "  warm-up. Speedup = original / tool; ours vs",
        "  onnxslim = onnxslim / ours; A/A = original / its second session (its distance from",
        "  1.00x is the noise floor of that row).",
        "",
        "| model | nodes original | nodes onnxslim | nodes onnxsim | nodes ours | max abs err onnxslim | max abs err onnxsim | max abs err ours |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for case, v, _ in results:
        o, s, m, u = v["original"], v["onnxslim"], v["onnxsim"], v["ours"]
        lines.append(f"| {case.name} | {_nodes(o)} | {_nodes(s)} | {_nodes(m)} | {_nodes(u)} | {_fmt_err(s)} | {_fmt_err(m)} | {_fmt_err(u)} |")
    lines += [
        "",
        "| model (timed input) | ms original | ms onnxslim | ms onnxsim | ms ours | speedup onnxslim | speedup onnxsim "
        "| speedup ours | ours vs onnxslim | A/A control |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for where, t in _timed_rows(results):
        ms = t.ms
        lines.append(
            f"| {where} | {_fmt_ms(ms.get('original'))} | {_fmt_ms(ms.get('onnxslim'))} | {_fmt_ms(ms.get('onnxsim'))} "
            f"| {_fmt_ms(ms.get('ours'))} | {_ratio(ms.get('original'), ms.get('onnxslim'))} "
            f"| {_ratio(ms.get('original'), ms.get('onnxsim'))} | {_ratio(ms.get('original'), ms.get('ours'))} "
            f"| {_ratio(ms.get('onnxslim'), ms.get('ours'))} | {t.aa_ratio:.2f}x |"
        )
    lines += [
        "",
        "CPU time per run with one intra-op thread (process CPU time, median of interleaved rounds;",
        "the work each model costs, nearly untouched by other load on the machine, unlike the latency",
        "above, but blind to the synchronization costs of multi-threaded runs):",
        "",
        "| model (timed input) | cpu ms original | cpu ms onnxslim | cpu ms onnxsim | cpu ms ours | ours vs original | ours vs onnxslim |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for where, t in _timed_rows(results):
        cpu = t.cpu_ms
        lines.append(
            f"| {where} | {_fmt_ms(cpu.get('original'))} | {_fmt_ms(cpu.get('onnxslim'))} | {_fmt_ms(cpu.get('onnxsim'))} "
            f"| {_fmt_ms(cpu.get('ours'))} | {_ratio(cpu.get('original'), cpu.get('ours'))} | {_ratio(cpu.get('onnxslim'), cpu.get('ours'))} |"
        )
    lines += [
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()} (needs `pip install -e .[bench]`,",
        "and torch's CPU build for the MiniLM export).",
        "",
        *[f"- {fact}" for fact in machine_facts()],
        f"- onnxsim {_onnxsim_version()}",
        f"- load average (1 min) when the tables were written: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(other jobs shared the machine: read every ratio beside its A/A control)",
        "",
        "The issue's targets (nodes and latency no worse than onnxslim's; MiniLM fused >= 1.3x the unfused):",
        "",
        *[f"- {line}" for case, v, timings in results for line in target_verdicts(case, v, timings)],
        "",
        f"Ops whose counts differ, onnxslim/{ours_label}:",
        "",
        *[f"- {case.name}: {op_diff(v['onnxslim'], v['ours'])}" for case, v, _ in results],
        "",
        f"Ops whose counts differ, onnxsim/{ours_label}:",
        "",
        *[f"- {case.name}: {op_diff(v['onnxsim'], v['ours'])}" for case, v, _ in results],
        "",
        "Inputs, and what each tool did:",
        "",
    ]
    for case, v, _ in results:
        details = [case.data, *v["original"].notes]
        for tool in TOOLS:
            t = v[tool]
            if t.error is not None:
                details.append(f"{tool} failed: {t.error}")
            else:
                details.append(f"{tool} took {t.seconds:.1f} s" + (f" ({'; '.join(t.notes)})" if t.notes else ""))
        lines.append(f"- {case.name}: " + "; ".join(details) + ".")
    return "\n".join(lines) + "\n"


def publish(heading: str, command: str, seconds: float, description: str, table: list[str], doc: Path | None) -> None:
    """A bench's section: heading, the command that made it, date and duration, what it
    measured, the machine, the table; written into ``doc`` (printed when ``doc`` is None)."""
    import datetime

    section = "\n".join([heading, "", f"`{command.strip()}`, {datetime.date.today()}, {seconds:.0f} s. {description}", "",
                         *(f"- {fact}" for fact in machine_facts()), "", *table, ""])
    if doc is None:
        print(section)
    else:
        write_section(doc, section, heading)


def write_section(doc: Path, section: str, heading: str = SECTION) -> None:
    """Replace the section ``heading`` (up to the next ``## `` heading) in ``doc``, or append
    it; the file is created with a title when missing. Written atomically."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nMeasured by the scripts in bench/; every table says how it was made.\n"
    pattern = re.compile(rf"^{re.escape(heading)}\s*\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    text = text.rstrip("\n") + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_name(f".{doc.name}.part")
    tmp.write_text(text)
    tmp.replace(doc)


# --- main ---------------------------------------------------------------------------------


def _available_passes() -> set[str]:
    from onnxsmith.registry import available_passes

    return set(available_passes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(ALL_MODELS), help=f"comma-separated, from {','.join(ALL_MODELS)}")
    parser.add_argument("--passes", default="fuse", help="onnxsmith passes to run, comma-separated (default: fuse)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds; skip MiniLM unless its export is cached")
    parser.add_argument("--rounds", type=int, help=f"timed rounds (default {ROUNDS}, --quick {QUICK_ROUNDS})")
    parser.add_argument("--doc", type=Path, default=DOC, help="Markdown file to update (default docs/benchmarks.md)")
    parser.add_argument("--no-doc", action="store_true", help="print the section, do not write it")
    parser.add_argument("--keep", type=Path, help="keep the optimized models in this folder")
    args = parser.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {','.join(ALL_MODELS)}")
    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    missing = [p for p in passes if p not in _available_passes()]
    if missing:
        parser.error(f"pass(es) {missing} are not registered (see `onnxsmith passes`); try --passes cleanup")
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    if args.quick and "minilm" in models and not rm.minilm_onnx_path().is_file():
        print("minilm: skipped (--quick, and its ONNX export is not cached)")
        models.remove("minilm")

    if not models:
        print("nothing to measure")
        return 1
    command = "python bench/fuse_bench.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results = []
    with tempfile.TemporaryDirectory(prefix="fuse-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in models:
            start = time.perf_counter()
            print(f"{name}: preparing data", flush=True)
            case = CASES[name]()
            variants, timings = bench_model(case, passes, rounds, work)
            results.append((case, variants, timings))
            summary = "  ".join(
                f"{t} {_nodes(v)} nodes err {_fmt_err(v) if t != 'original' else '-'}" for t, v in variants.items()
            )
            print(f"  {summary}  ({time.perf_counter() - start:.0f} s)", flush=True)
            for t in timings:
                print(f"  timed {t.label or 'main'}: " + "  ".join(f"{k} {_fmt_ms(ms)} ms" for k, ms in t.ms.items())
                      + f"  A/A {t.aa_ratio:.2f}x", flush=True)

    section = render_section(results, passes, rounds, command.strip())
    print()
    print(section)
    if not args.no_doc:
        write_section(args.doc, section)
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
