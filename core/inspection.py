"""What ``onnxsmith inspect`` shows about a model, as one JSON-able dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxsmith.data import model_inputs
from onnxsmith.graph_stats import graph_stats
from onnxsmith.model import provenance
from onnxsmith.modelio import load_onnx

__all__ = ["inspect_model"]


def inspect_model(path: str | Path) -> dict[str, Any]:
    model, data_files = load_onnx(path)
    stats = graph_stats(model)
    inputs = {spec.name for spec in model_inputs(model)}
    return {
        "path": str(path),
        "ir_version": model.ir_version,
        "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p),
        "opsets": stats.opsets,
        "custom_domains": stats.custom_domains,
        "inputs": [_value(v) for v in model.graph.inputs if v.name in inputs],
        "outputs": [_value(v) for v in model.graph.outputs],
        "nodes": stats.nodes,
        "op_histogram": stats.op_histogram,
        "params": stats.params,
        "param_bytes": stats.param_bytes,
        "params_by_dtype": stats.params_by_dtype,
        "external_data": [{"file": p.name, "bytes": p.stat().st_size} for p in data_files],
        "file_bytes": Path(path).stat().st_size,
        "provenance": provenance(model),
    }


def _value(value) -> dict[str, Any]:
    dims = [] if value.shape is None else [d if isinstance(d, int) else (d.value or "?") for d in value.shape]
    return {"name": value.name, "dtype": value.dtype.name.lower() if value.dtype else "unknown", "shape": dims}


