"""The origin map: for every node, the nodes of the user's original model it stands for.

After fusion or quantization the graph's nodes are new, but reports must still speak of
the layers the user knows. The map follows nodes by name, then by the tensors they
produce (a fused node keeps its pattern's output names); a node with neither is
attributed to the pass that inserted it. It travels inside the artifact's metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import onnx_ir as ir

from onnxsmith.graph_stats import all_nodes

__all__ = ["ORIGIN_METADATA_KEY", "OriginMap"]

ORIGIN_METADATA_KEY = "onnxsmith.origin"


@dataclass
class OriginMap:
    """``origins[node]`` lists original node names; ``inserted_by[node]`` names a pass."""

    origins: dict[str, list[str]] = field(default_factory=dict)
    inserted_by: dict[str, str] = field(default_factory=dict)
    # tensor name -> (producer node, its input tensor names) in the graph the map last saw
    _producers: dict[str, tuple[str, list[str]]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def identity(cls, model: ir.Model) -> OriginMap:
        """Start a map where every node stands for itself, continuing one stored in the model."""
        _name_unnamed_nodes(model)
        stored = model.metadata_props.get(ORIGIN_METADATA_KEY)
        previous = cls.from_json(stored) if stored else cls()
        origin_map = cls()
        for node in all_nodes(model):
            origin_map.origins[node.name] = previous.origins.get(node.name, [node.name])
            if node.name in previous.inserted_by:
                origin_map.inserted_by[node.name] = previous.inserted_by[node.name]
        origin_map._remember_outputs(model)
        return origin_map

    def update(self, model: ir.Model, pass_name: str) -> None:
        """Carry the map over to ``model`` as it stands after ``pass_name`` ran."""
        _name_unnamed_nodes(model)
        alive = _tensor_names(model)
        new_origins: dict[str, list[str]] = {}
        new_inserted: dict[str, str] = {}
        for node in all_nodes(model):
            if node.name in self.origins:
                new_origins[node.name] = self.origins[node.name]
                if node.name in self.inserted_by:
                    new_inserted[node.name] = self.inserted_by[node.name]
                continue
            found = self._vanished_cone([out.name for out in node.outputs], alive)
            new_origins[node.name] = found
            if not found:
                new_inserted[node.name] = pass_name
        self.origins, self.inserted_by = new_origins, new_inserted
        self._remember_outputs(model)

    def _vanished_cone(self, outputs: list[str], alive: set[str]) -> list[str]:
        """Origins of the old nodes a new node replaced: walking back from its outputs through
        the previous graph, every producer up to tensors that still exist (Conv+BN -> Conv
        gives both)."""
        found: set[str] = set()
        stack, seen = list(outputs), set(outputs)
        while stack:
            producer = self._producers.get(stack.pop())
            if producer is None:
                continue
            found.update(self.origins.get(producer[0], [producer[0]]))
            for name in producer[1]:
                if name not in alive and name not in seen:
                    seen.add(name)
                    stack.append(name)
        return sorted(found)

    def _remember_outputs(self, model: ir.Model) -> None:
        self._producers = {
            output.name: (node.name, [v.name for v in node.inputs if v is not None])
            for node in all_nodes(model)
            for output in node.outputs
        }

    def to_json(self) -> str:
        """Compact form: only nodes that do not simply stand for themselves."""
        changed = {k: v for k, v in self.origins.items() if v != [k]}
        return json.dumps({"origins": changed, "inserted_by": self.inserted_by}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> OriginMap:
        data = json.loads(text)
        return cls(origins=dict(data.get("origins", {})), inserted_by=dict(data.get("inserted_by", {})))

    def describe(self, node_name: str) -> str:
        """A human name for a node: its original layers, or the pass that inserted it."""
        if node_name in self.inserted_by:
            return f"(inserted by {self.inserted_by[node_name]})"
        return ", ".join(self.origins.get(node_name, [node_name]))


def _tensor_names(model: ir.Model) -> set[str]:
    names = {v.name for v in model.graph.inputs} | set(model.graph.initializers)
    for node in all_nodes(model):
        names.update(v.name for v in node.outputs)
    return names


def _name_unnamed_nodes(model: ir.Model) -> None:
    """Give every unnamed node a unique name so it can be tracked."""
    taken = {node.name for node in all_nodes(model) if node.name}
    counter = 0
    for node in all_nodes(model):
        if not node.name:
            while f"{node.op_type}_{counter}" in taken:
                counter += 1
            node.name = f"{node.op_type}_{counter}"
            taken.add(node.name)
