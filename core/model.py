"""The Model object every pass works on: an onnx_ir model, where it came from, its origins."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from onnxsmith.origin import ORIGIN_METADATA_KEY, OriginMap

__all__ = ["INFERENCE_PRECISION_KEY", "PROVENANCE_PREFIX", "Model", "provenance"]

PROVENANCE_PREFIX = "onnxsmith."
# The whole-model inference precision the artifact was verified with: onnxsmith's OpenVINO
# sessions compile with it unless told otherwise (fp32 when absent).
INFERENCE_PRECISION_KEY = PROVENANCE_PREFIX + "inference_precision"


@dataclass
class Model:
    """An ``onnx_ir.Model`` with its source path, data files, content hash and origin map."""

    ir: ir.Model
    source: Path | None = None
    data_files: list[Path] = field(default_factory=list)
    sha256: str = ""
    origin: OriginMap = field(default_factory=OriginMap)
    notes: list[str] = field(default_factory=list)  # what checking the source found, for the report's warnings

    @property
    def used_external_data(self) -> bool:
        return bool(self.data_files)

    def stamp_provenance(self, version: str, recipe: dict) -> None:
        """Record in the model's metadata who wrote it, from what, and how (``recipe``: as
        recorded, with no path of the build machine in it: the same recipe on another machine
        gives the same bytes); the model's producer becomes onnxsmith."""
        self.ir.producer_name, self.ir.producer_version = "onnxsmith", version
        props = self.ir.metadata_props
        props[PROVENANCE_PREFIX + "version"] = version
        props[PROVENANCE_PREFIX + "source_sha256"] = self.sha256
        props[PROVENANCE_PREFIX + "recipe"] = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
        props[ORIGIN_METADATA_KEY] = self.origin.to_json()


def provenance(model: ir.Model) -> dict[str, object] | None:
    """The provenance onnxsmith stored in a model, or None if onnxsmith did not write it."""
    props = model.metadata_props
    if PROVENANCE_PREFIX + "version" not in props:
        return None
    recipe = props.get(PROVENANCE_PREFIX + "recipe")
    return {
        "version": props[PROVENANCE_PREFIX + "version"],
        "source_sha256": props.get(PROVENANCE_PREFIX + "source_sha256", ""),
        "recipe": json.loads(recipe) if recipe else None,
    }
