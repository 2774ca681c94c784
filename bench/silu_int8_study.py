#!/usr/bin/env python
"""Would an int8 SiLU make YOLOv8n's int8 faster on ONNX Runtime CPU?

    python bench/silu_int8_study.py [--rounds 21]

In our int8 YOLOv8n every SiLU runs in float between two int8 convolutions:
QLinearConv -> DequantizeLinear -> QuickGelu -> QuantizeLinear -> QLinearConv, about a
quarter of the int8 model's time. ONNX Runtime has no int8 SiLU, but it fuses
DQ -> Sigmoid -> Q into QLinearSigmoid (a lookup table) and DQ -> Mul -> Q into QLinearMul.
This study builds the default int8 artifact (``fuse,quantize{mode=int8}``), rewrites each
``DQ -> QuickGelu(alpha=1)`` into ``x * Q(Sigmoid(x))`` with the sigmoid quantized at
1/255 (uint8, zero point 0), and times the fp32 model and both int8 models interleaved on
the cpu backend, then prints where each int8 model spends its time by op type.

Measured on a 2-core AMD EPYC (AVX-512 VNNI BF16), ONNX Runtime 1.32, 2026-12-07: not
faster (1.59x over fp32 against 1.67x for the default; docs/benchmarks.md "## int8 variants
on ONNX Runtime CPU"). QLinearSigmoid's lookup is cheaper than QuickGelu, but the Q/DQ
pairs and the Muls it adds cost more than that saves.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # tasks.py: shared with the tests
import tasks

from onnxsmith.backend import get_backend
from onnxsmith.latency import measure_interleaved
from onnxsmith.modelio import load_onnx
from onnxsmith.optimize import OptimizeOptions, optimize
from onnxsmith.recipe import parse_pipeline, validate_recipe


def int8_silu(source: Path, target: Path) -> int:
    """Write ``source`` with every DQ -> QuickGelu(alpha=1) as x * Q(Sigmoid(x)); returns how many."""
    model = onnx.load(str(source))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    graph.initializer.extend([numpy_helper.from_array(np.array(1 / 255, np.float32), "silu_sigmoid_scale"),
                              numpy_helper.from_array(np.array(0, np.uint8), "silu_sigmoid_zero_point")])
    nodes, count = [], 0
    for node in graph.node:
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
        dq = producer.get(node.input[0]) if node.op_type == "QuickGelu" else None
        if dq is None or dq.op_type != "DequantizeLinear" or alpha != 1.0:
            nodes.append(node)
            continue
        k = f"silu_{count}"
        count += 1
        sigmoid_q = ["silu_sigmoid_scale", "silu_sigmoid_zero_point"]
        nodes += [helper.make_node("Sigmoid", [node.input[0]], [f"{k}_s"], name=f"{k}_sigmoid"),
                  helper.make_node("QuantizeLinear", [f"{k}_s", *sigmoid_q], [f"{k}_sq"], name=f"{k}_q"),
                  helper.make_node("DequantizeLinear", [f"{k}_sq", *sigmoid_q], [f"{k}_sd"], name=f"{k}_dq"),
                  helper.make_node("DequantizeLinear", list(dq.input), [f"{k}_x"], name=f"{k}_dqx"),  # one DQ per consumer
                  helper.make_node("Mul", [f"{k}_x", f"{k}_sd"], list(node.output), name=f"{k}_mul")]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(target))
    return count


def time_by_op(backend, model, feed) -> list[tuple[str, int, float]]:
    profile = backend.profile(model, [feed], runs=10, warmup=2)
    return [(row["op_type"], row["count"], row["median_ms"]) for row in profile.by_op_type()[:8]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args(argv)
    task = tasks.get_task("yolov8n")
    backend = get_backend("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        calib = tasks.save_npz(task.calibration(16), work / "calib.npz")
        recipe = validate_recipe({"passes": parse_pipeline("fuse,quantize{mode=int8}"), "calibration": {"data": str(calib)}})
        optimize(str(task.model_path()), work / "int8.onnx", recipe, OptimizeOptions(latency_rounds=0))
        rewritten = int8_silu(work / "int8.onnx", work / "int8_silu.onnx")
        models = {name: load_onnx(path)[0] for name, path in
                  [("fp32", task.model_path()), ("int8", work / "int8.onnx"), ("int8 + int8 SiLU", work / "int8_silu.onnx")]}
        feed = task.timed()
        stats = measure_interleaved({name: backend.create_session(m) for name, m in models.items()}, feed, rounds=args.rounds)
        print(f"{rewritten} SiLUs rewritten; {backend.target.cpu.model} ({backend.target.cpu.isa})")
        for name, stat in stats.items():
            print(f"{name:18s} {stat.median_ms:8.3f} ms  {stats['fp32'].median_ms / stat.median_ms:.2f}x over fp32")
        for name in ("int8", "int8 + int8 SiLU"):
            print(f"{name}: " + ", ".join(f"{op} x{n} {ms:.2f} ms" for op, n, ms in time_by_op(backend, models[name], feed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
