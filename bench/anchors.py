#!/usr/bin/env python
"""Every recipe bench/run.py compares: onnxsmith's, and the tools a user would pick instead.

    python bench/anchors.py RECIPE SRC OUT CALIB.npz     # build one artifact, print a JSON line

run.py starts this once per recipe in its own process, so the tool's run time and peak
memory (``ru_maxrss`` of that process) are its own. Each recipe is called the way its
documentation shows a user calling it, with default options, on the original file:

* onnxsmith (through ``onnxsmith.optimize``, what ``onnxsmith optimize --passes ...
  --calib CALIB.npz`` runs; it holds a quarter of CALIB out for its own checks);
* ONNX Runtime: ``quantize_static`` (QDQ, per-channel, MinMax calibration: its defaults
  otherwise) once on the original file and once after ``onnx.version_converter`` to opset
  13 (per-channel QDQ needs it), ``quantize_dynamic``, and ``float16.convert_float_to_float16``
  (``keep_io_types=True``);
* onnxslim ``slim``; onnxsim ``simplify`` and its 0.8 quantize/prune entry points
  (``quantize_static`` with the calibration feeds, ``quantize_dynamic``, ``quantize_fp16``,
  ``quantize_auto`` (its accuracy-budget search, default budget), ``apply_structured_pruning``
  at the same 30% as ours);
* NNCF ``nncf.quantize`` of the ONNX model (post-training, default preset, all the
  calibration feeds);
* the OpenVINO runtime on the fp32 model is not an artifact: here its process reads and
  compiles the model (default configuration) and runs it once, for its run time and peak
  memory; run.py scores and times it in-process (``kind == "runtime"``).

For onnxsmith, the JSON line also gives ``phases``: seconds per pass (the pass itself) and
``other`` (loading, reference outputs, verification after each pass, writing).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class Recipe:
    key: str
    tool: str  # "onnxsmith", "ONNX Runtime", ...
    label: str  # what was run, as the tables show it
    kind: str  # "fuse", "int8", "fp16", "int4", "dynamic", "prune", "auto", "runtime"
    needs_calibration: bool = False
    models: tuple[str, ...] = ()  # only these models (empty: all)
    passes: str = ""  # onnxsmith recipes: the --passes string

    @property
    def ours(self) -> bool:
        return self.tool == "onnxsmith"


OURS_INT4_MODELS = ("minilm",)  # int4 weight-only is for MatMul-heavy transformers

RECIPES: tuple[Recipe, ...] = (
    Recipe("ours-fuse", "onnxsmith", "fuse", "fuse", passes="fuse"),
    Recipe("ours-int8-noguard", "onnxsmith", "fuse,quantize{mode=int8,guard=off}", "int8", True,
           passes="fuse,quantize{mode=int8,guard=off}"),
    Recipe("ours-int8", "onnxsmith", "fuse,quantize{mode=int8} (guard on, default budget; speed measured per layer)", "int8",
           True, passes="fuse,quantize{mode=int8}"),
    Recipe("ours-int8-rules", "onnxsmith", "fuse,quantize{mode=int8,speed=rules} (the AVX2-measured speed rules)", "int8",
           True, passes="fuse,quantize{mode=int8,speed=rules}"),
    Recipe("ours-fp16", "onnxsmith", "fuse,quantize{mode=fp16}", "fp16", True, passes="fuse,quantize{mode=fp16}"),
    Recipe("ours-int4", "onnxsmith", "fuse,quantize{mode=int4}", "int4", True, OURS_INT4_MODELS,
           passes="fuse,quantize{mode=int4}"),
    Recipe("ours-prune", "onnxsmith", "fuse,prune{method=channel,ratio=0.3}", "prune", True,
           passes="fuse,prune{method=channel,ratio=0.3}"),
    Recipe("ort-qdq", "ONNX Runtime", "quantize_static(QDQ, per_channel) on the original file", "int8", True),
    Recipe("ort-qdq-opset13", "ONNX Runtime", "quantize_static(QDQ, per_channel) after opset 13 upgrade", "int8", True),
    Recipe("ort-dynamic", "ONNX Runtime", "quantize_dynamic", "dynamic"),
    Recipe("ort-fp16", "ONNX Runtime", "float16.convert_float_to_float16(keep_io_types)", "fp16"),
    Recipe("onnxslim", "onnxslim", "slim", "fuse"),
    Recipe("onnxsim", "onnxsim", "simplify", "fuse"),
    Recipe("onnxsim-static", "onnxsim", "quantize_static(calibration feeds)", "int8", True),
    Recipe("onnxsim-dynamic", "onnxsim", "quantize_dynamic", "dynamic"),
    Recipe("onnxsim-fp16", "onnxsim", "quantize_fp16", "fp16"),
    Recipe("onnxsim-auto", "onnxsim", "quantize_auto (default budget 0.02)", "auto", True),
    Recipe("onnxsim-prune", "onnxsim", "apply_structured_pruning(sparsity=0.3)", "prune"),
    Recipe("nncf", "NNCF", "nncf.quantize (ONNX, default preset)", "int8", True),
    Recipe("openvino", "OpenVINO", "runtime on the fp32 model (default precision hint)", "runtime"),
)
BY_KEY = {r.key: r for r in RECIPES}


def applies(recipe: Recipe, model: str) -> bool:
    return not recipe.models or model in recipe.models


def unavailable(recipe: Recipe) -> str | None:
    """Why ``recipe`` cannot run here (a pass, mode or package missing), or None."""
    if recipe.ours:
        from onnxsmith.registry import available_passes

        passes = available_passes()
        for part in _pass_names(recipe.passes):
            if part not in passes:
                return f"pass '{part}' is not registered in this onnxsmith"
        if "quantize{" in recipe.passes:
            mode = recipe.passes.split("mode=", 1)[1].split(",", 1)[0].split("}", 1)[0]
            from onnxsmith.passes.quantize.quantize_pass import MODES

            module = MODES.get(mode, (None,))[0]
            if module is None or importlib.util.find_spec(module) is None:
                return f"quantize mode '{mode}' is not implemented in this onnxsmith"
        return None
    package = {"ONNX Runtime": "onnxruntime", "onnxslim": "onnxslim", "onnxsim": "onnxsim", "NNCF": "nncf", "OpenVINO": "openvino"}[recipe.tool]
    if importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install -e .[bench])"
    if recipe.tool == "onnxsim" and recipe.key != "onnxsim":
        from importlib.metadata import version

        have = version("onnxsim")
        if tuple(int(p) for p in re.findall(r"\d+", have)[:2]) < (0, 8):
            return f"onnxsim {have} has no quantize/prune modes (they came in 0.8)"
    return None


def _pass_names(passes: str) -> list[str]:
    from onnxsmith.recipe import parse_pipeline

    return [name for entry in parse_pipeline(passes) for name in entry]


# --- building one artifact ---------------------------------------------------------------------


def load_feeds(npz: Path) -> list[Feed]:
    """The feeds of a calibration .npz written by tasks.save_npz (samples on axis 0)."""
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    count = len(next(iter(arrays.values())))
    return [{k: v[i] for k, v in arrays.items()} for i in range(count)]


def _ours(recipe: Recipe, src: Path, out: Path, calib: Path) -> dict:
    from onnxsmith.optimize import OptimizeOptions, optimize
    from onnxsmith.recipe import parse_pipeline, validate_recipe

    spec = validate_recipe({"passes": parse_pipeline(recipe.passes), "calibration": {"data": str(calib)}})
    start = time.perf_counter()
    report = optimize(str(src), out, spec, OptimizeOptions(latency_rounds=0))
    total = time.perf_counter() - start
    notes, phases = [], {}
    for record in report.passes:
        phases[record.name] = phases.get(record.name, 0.0) + record.seconds
        counts = ", ".join(f"{k} {v}" for k, v in record.counts.items() if v)
        if counts:
            notes.append(f"{record.name}: {counts}")
    phases["other"] = max(0.0, total - sum(phases.values()))
    return {"notes": notes, "phases": phases}


class _Reader:
    """ONNX Runtime's CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[Feed]):
        self._it = iter(feeds)

    def get_next(self) -> Feed | None:
        return next(self._it, None)

    def rewind(self) -> None:  # not called by quantize_static; here for newer ORT readers
        pass


def _ort_qdq(src: Path, out: Path, calib: Path, *, opset13: bool) -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(load_feeds(calib))
    model_input: str | Path = src
    notes = []
    if opset13:
        model = onnx.load(str(src))
        version = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if version < 13:
            model = onnx.version_converter.convert_version(model, 13)
            model_input = out.with_suffix(".opset13.onnx")
            onnx.save(model, str(model_input))
            notes.append(f"opset {version} -> 13")
        else:
            notes.append(f"already opset {version}: same call as on the original")
    quantize_static(str(model_input), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True)
    return {"notes": notes}


def _ort_dynamic(src: Path, out: Path, calib: Path) -> dict:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(src), str(out))
    return {}


def _ort_fp16(src: Path, out: Path, calib: Path) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(out))
    return {}


def _onnxslim(src: Path, out: Path, calib: Path) -> dict:
    import onnx
    import onnxslim

    onnx.save(onnxslim.slim(str(src)), str(out))
    return {}


def _onnxsim(function: str, **kwargs) -> Callable[[Path, Path, Path], dict]:
    def build(src: Path, out: Path, calib: Path) -> dict:
        import onnx
        import onnxsim

        args = dict(kwargs)
        if args.pop("calibration", False):
            args["calibration_data"] = load_feeds(calib)
        result = getattr(onnxsim, function)(str(src), **args)
        notes = []
        if isinstance(result, tuple):  # simplify -> (model, check_ok)
            result, ok = result
            notes.append(f"check {'passed' if ok else 'failed'}")
        onnx.save(result, str(out))
        return {"notes": notes}

    return build


def _nncf(src: Path, out: Path, calib: Path) -> dict:
    import nncf
    import onnx

    feeds = load_feeds(calib)
    quantized = nncf.quantize(onnx.load(str(src)), nncf.Dataset(feeds), subset_size=len(feeds))
    onnx.save(quantized, str(out))
    return {}


def _openvino(src: Path, out: Path, calib: Path) -> dict:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(src)), "CPU")  # default configuration
    compiled.create_infer_request().infer(load_feeds(calib)[0])
    return {"notes": [f"inference precision {openvino_precision(compiled)}"]}


def openvino_precision(compiled) -> str:
    """The CPU plugin's INFERENCE_PRECISION_HINT as a short name (f32, bf16, f16)."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return str(getattr(hint, "type_name", None) or hint).removeprefix("<Type: '").removesuffix("'>")


BUILDERS: dict[str, Callable[[Path, Path, Path], dict]] = {
    "ort-qdq": lambda s, o, c: _ort_qdq(s, o, c, opset13=False),
    "ort-qdq-opset13": lambda s, o, c: _ort_qdq(s, o, c, opset13=True),
    "ort-dynamic": _ort_dynamic,
    "ort-fp16": _ort_fp16,
    "onnxslim": _onnxslim,
    "onnxsim": _onnxsim("simplify"),
    "onnxsim-static": _onnxsim("quantize_static", calibration=True),
    "onnxsim-dynamic": _onnxsim("quantize_dynamic"),
    "onnxsim-fp16": _onnxsim("quantize_fp16"),
    "onnxsim-auto": _onnxsim("quantize_auto", calibration=True),
    "onnxsim-prune": _onnxsim("apply_structured_pruning", sparsity=0.3),
    "nncf": _nncf,
    "openvino": _openvino,
}


def build(key: str, src: Path, out: Path, calib: Path) -> dict:
    recipe = BY_KEY[key]
    if recipe.ours:
        return _ours(recipe, src, out, calib)
    return BUILDERS[key](src, out, calib)


def main(argv: list[str]) -> int:
    key, src, out, calib = argv
    start = time.perf_counter()
    result = build(key, Path(src), Path(out), Path(calib))
    result["seconds_inside"] = time.perf_counter() - start
    print("ANCHOR-RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main(sys.argv[1:]))
