"""Naming what a runtime ran by the layers of the user's model.

A runtime renames and fuses: ONNX Runtime's NCHWc Conv ``relu_nchwc`` computes the user's
Conv, BatchNormalization and Relu; OpenVINO lists a fused layer's ``originalLayersNames``
(node names, output tensor names or its own). Each runtime kernel brings *seeds*, the
names it is known by; this module turns them into nodes of the profiled model, then into
the original model's node names through the origin map stored in the model's metadata.

1. A seed is a node name of the profiled model, or a tensor name (its producer), possibly
   with a runtime suffix (``_nchwc``, ``/WithoutBiases``) that is stripped, or the name ONNX
   Runtime gives a node one of its fusions made (``<first node>/QuickGeluFusion/``).
2. A kernel owns the nodes its seeds name, plus the *cone* behind them: walking back from
   their outputs, every producer of a tensor that no other kernel claims (a fused-away
   BatchNormalization's input belongs to the Conv kernel that absorbed it).
3. Its origin is the union of those nodes' origins; a kernel whose nodes all were inserted
   by a pass says which; one with no node at all was inserted by the runtime (a layout
   reorder).
Dynamo-exported models name the PyTorch module of each node in metadata
(``pkg.torch.onnx.name_scopes``); a layer reports its module when its nodes have one.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass

import onnx_ir as ir

from onnxsmith.graph_stats import all_nodes
from onnxsmith.origin import ORIGIN_METADATA_KEY, OriginMap

__all__ = ["LayerMapper", "MappedLayer", "principal_origin"]

_SUFFIXES = ("_nchwc", "/WithoutBiases", "/sink_port_0")  # ORT NCHWc nodes; OpenVINO's split-off bias and results
# ONNX Runtime names a node its fusions create after the node they start from:
# ``/model.0/act/Mul/QuickGeluFusion/`` (x * Sigmoid(x) -> QuickGelu), maybe with ``_token_N``
_RUNTIME_FUSION = re.compile(r"^(?P<base>.+)/\w+Fusion/?(?:_token_\d+)?$")
_NAME_SCOPES = "pkg.torch.onnx.name_scopes"
_HEAVY_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Attention", "LSTM", "GRU", "Einsum")  # what names a fused layer
_BOOKKEEPING = {"Constant", "Shape", "Squeeze", "Unsqueeze", "Reshape", "Concat", "Gather", "Cast", "Identity"}


_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QDQ_RENAMED_SUFFIX = "_QuantizeLinear_Input"  # what the int8 QDQ writer renames a tensor whose name its DequantizeLinear took


@dataclass(frozen=True)
class MappedLayer:
    """Where one runtime kernel comes from in the user's terms."""

    nodes: tuple[str, ...]  # nodes of the profiled model, in graph order
    op_types: tuple[str, ...]  # their op types
    modules: tuple[str | None, ...]  # their PyTorch modules, for dynamo exports
    origin: tuple[str, ...]  # node names of the original model
    inserted_by: str | None  # the pass (or "runtime") that inserted it, when nothing original
    tensor: str | None = None  # the layer's result: its last node's first output, seen through Q/DQ (_float_view)

    def head(self, op_type: str) -> int | None:
        """Index of the node that names the layer: the first of the kernel's op type or of the
        op it computes (a QLinearConv's Conv between its Q/DQ), else the first that computes
        something (not Constant/Shape, not Q/DQ), else the first."""
        if not self.nodes:
            return None
        base = _base_op(op_type)
        for i, op in enumerate(self.op_types):
            if op in (op_type, base):
                return i
        return next((i for i, op in enumerate(self.op_types) if op not in _BOOKKEEPING and op not in _QDQ_OPS), 0)

    def name(self, op_type: str, fallback: str) -> str:
        """The layer's name in the user's model: the head node when it stands for itself,
        else the original node it computes (``principal_origin``); ``fallback`` (the runtime's
        name) when nothing maps."""
        index = self.head(op_type)
        if index is not None and self.nodes[index] in self.origin:
            return self.nodes[index]
        return principal_origin(self.origin, self.op_types[index] if index is not None else op_type) or fallback

    def module(self, op_type: str) -> str | None:
        index = self.head(op_type)
        return self.modules[index] if index is not None else None


def principal_origin(origin: Sequence[str], op_type: str) -> str | None:
    """The original node a layer of ``op_type`` computes, among the names it stands for.

    A fused node's origin is its whole pattern, sorted by name, so its first name may be a
    folded BatchNormalization or a Constant: a Paddle Conv with its BatchNorm folded in
    (``BatchNormalization@0, Constant_3, Conv@0``) is ``Conv@0``. Names are all there is
    (the origin map keeps no op types), and exporters put the op in the names of nodes they
    made (``Conv@0``, ``node_Conv_16``, ``/conv1/Conv``, ``node_conv2d``), so:

    1. the first name with the layer's base op as a word (FusedConv, QLinearConv, ConvInteger: Conv);
    2. for a layer of a heavy op (a Gemm made of MatMul+Add), the first name of any heavy op;
    3. the first name that is neither a Constant nor a heavy op's (a runtime's Reshape
       beside a Conv must not take the Conv's name), then the first not a Constant, then the first.
    """
    if not origin:
        return None
    base = _base_op(op_type)
    found = _first_naming(origin, (base,))
    if found is None and base in _HEAVY_OPS:
        found = _first_naming(origin, _HEAVY_OPS)
    if found is not None:
        return found
    plain = [name for name in origin if not name.startswith("Constant")]
    heavy = set(filter(None, (_first_naming([name], _HEAVY_OPS) for name in plain)))
    return next((name for name in plain if name not in heavy), plain[0] if plain else origin[0])


def _first_naming(names: Sequence[str], ops: Sequence[str]) -> str | None:
    """The first of ``names`` with one of ``ops`` in it as a word (any case: ``node_conv2d`` names a Conv)."""
    for op in ops:
        word = re.compile(rf"(?<![a-z]){re.escape(op)}(?![a-z])", re.IGNORECASE)
        found = next((name for name in names if word.search(name)), None)
        if found is not None:
            return found
    return None


def _base_op(op_type: str) -> str:
    """The ONNX op a runtime's or a pass's kernel computes: FusedConv, QLinearConv, ConvInteger -> Conv."""
    for prefix in ("Fused", "QLinear", "DynamicQuantize", "Nhwc"):
        op_type = op_type.removeprefix(prefix)
    for suffix in ("Integer", "NBits"):
        op_type = op_type.removesuffix(suffix)
    return op_type


def _float_view(value: ir.Value) -> ir.Value:
    """The tensor holding ``value`` as its readers see it. The int8 QDQ writer renames a tensor
    ``X_QuantizeLinear_Input`` where the DequantizeLinear after it took the name ``X`` (a graph
    output, or a Relu/Clip folded into the range): then that DequantizeLinear's output."""
    if not value.name or not value.name.endswith(QDQ_RENAMED_SUFFIX):
        return value
    wanted = value.name.removesuffix(QDQ_RENAMED_SUFFIX)
    for use in value.uses():
        if use.node.op_type == "QuantizeLinear":
            for read in use.node.outputs[0].uses():
                if read.node.op_type == "DequantizeLinear" and read.node.outputs[0].name == wanted:
                    return read.node.outputs[0]
    return value


class LayerMapper:
    """Maps seeds (runtime names) to the nodes and original names of ``model``."""

    def __init__(self, model: ir.Model) -> None:
        stored = model.metadata_props.get(ORIGIN_METADATA_KEY)
        self._origin = OriginMap.from_json(stored) if stored else OriginMap()
        self._nodes = {node.name: node for node in all_nodes(model) if node.name}
        self._order = {name: i for i, name in enumerate(self._nodes)}
        self._producer = {out.name: node.name for node in all_nodes(model) for out in node.outputs if node.name}

    def resolve(self, seeds: list[str]) -> list[str]:
        """Nodes of the model that ``seeds`` name (rule 1), in graph order."""
        found: set[str] = set()
        for seed in seeds:
            fused = _RUNTIME_FUSION.match(seed)
            for name in {seed, *(seed[: -len(s)] for s in _SUFFIXES if seed.endswith(s)), *([fused["base"]] if fused else [])}:
                if name in self._nodes:
                    found.add(name)
                elif name in self._producer:
                    found.add(self._producer[name])
        return sorted(found, key=self._order.__getitem__)

    def assign(self, seeds: dict[str, list[str]], fallback: dict[str, list[str]] | None = None) -> dict[str, MappedLayer]:
        """Map every kernel (key) to its nodes and origins, cones included (rules 2 and 3).

        ``fallback`` seeds are used for a kernel whose own seeds name nothing (the runtime's
        tensors downstream of a kernel that only writes runtime-internal tensors)."""
        fallback = fallback or {}
        direct = {kernel: self.resolve(names) or self.resolve(fallback.get(kernel, [])) for kernel, names in seeds.items()}
        claimed = {out.name for nodes in direct.values() for n in nodes for out in self._nodes[n].outputs}
        return {kernel: self._describe(self._cone(nodes, claimed)) for kernel, nodes in direct.items()}

    def _cone(self, nodes: list[str], claimed: set[str]) -> list[str]:
        owned = set(nodes)
        stack = list(nodes)
        while stack:
            for value in self._nodes[stack.pop()].inputs:
                producer = self._producer.get(value.name) if value is not None else None
                if producer is None or producer in owned or value.name in claimed:
                    continue
                owned.add(producer)
                stack.append(producer)
        return sorted(owned, key=self._order.__getitem__)

    def _describe(self, nodes: list[str]) -> MappedLayer:
        if not nodes:
            return MappedLayer((), (), (), (), "runtime")
        origin: list[str] = []
        inserted = []
        # a DequantizeLinear fused into the kernel that reads it carries the name (and so the
        # origin) of the tensor it restores, which is the previous layer's: it names no layer
        # here unless the layer is only quantize/dequantize nodes
        computing = [n for n in nodes if self._nodes[n].op_type not in _QDQ_OPS] or nodes
        for name in nodes:
            if name in self._origin.inserted_by:
                inserted.append(self._origin.inserted_by[name])
        for name in computing:
            for original in self._origin.origins.get(name, [name]):
                if original not in origin:
                    origin.append(original)
        op_types = tuple(self._nodes[n].op_type for n in nodes)
        modules = tuple(self._module(n) for n in nodes)
        outputs = self._nodes[nodes[-1]].outputs
        tensor = _float_view(outputs[0]).name if outputs else None
        if len(inserted) == len(nodes):
            return MappedLayer(tuple(nodes), op_types, modules, (), inserted[0], tensor)
        return MappedLayer(tuple(nodes), op_types, modules, tuple(origin), None, tensor)

    def _module(self, node: str) -> str | None:
        """The PyTorch module a dynamo-exported node came from (its deepest name scope but the op's own)."""
        text = self._nodes[node].metadata_props.get(_NAME_SCOPES)
        if not text:
            return None
        try:
            scopes = [s for s in ast.literal_eval(text) if s]
        except (ValueError, SyntaxError):
            return None
        return scopes[-2] if len(scopes) >= 2 else None
