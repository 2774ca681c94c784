"""The data of the channel dependency analysis, and the state its rules work on.

``Analyser`` holds the union-find of channel elements, the followed tensors (``Slot``), the
edits that follow kept channels and the weight layers; the rules (channel_layer_rules.py,
channel_tensor_rules.py) call its methods, channel_groups.py runs them over a graph and
turns the state into a ``ChannelAnalysis``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

__all__ = ["Analyser", "ChannelAnalysis", "Edit", "Group", "Slot", "WeightLayer", "const_array", "shape_entries"]


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant behind ``value`` (an initializer or a Constant node's output), or None."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def shape_entries(value: ir.Value | None) -> list[int | None] | None:
    """The entries of a 1-D shape tensor: a constant, or a Concat of one-element pieces with
    None for the pieces computed at run time; None when it is neither."""
    array = const_array(value)
    if array is not None:
        return [int(v) for v in array.ravel()]
    concat = value.producer() if value is not None else None
    if concat is None or concat.op_type != "Concat":
        return None
    pieces = [const_array(v) for v in concat.inputs]
    if any(p is not None and p.size != 1 for p in pieces):
        return None
    if any(p is None and (v.shape is None or v.shape.rank() != 1 or v.shape[0] != 1) for p, v in zip(pieces, concat.inputs, strict=True)):
        return None  # a computed piece of unknown length: positions cannot be told
    return [int(p.ravel()[0]) if p is not None else None for p in pieces]


@dataclass
class Slot:
    """A followed tensor: its channel axis and the element id of each channel."""

    value: ir.Value
    axis: int
    ids: list[int]


@dataclass(frozen=True)
class Edit:
    """A rewrite that follows the kept channels of ``slot``.

    kind ``param``: slice the constant input ``index`` of ``node`` along ``axis``;
    ``group``: set a depthwise Conv's group to the kept count; ``split``: rewrite a Split's
    sizes to its outputs' kept counts; ``dims``: set entry ``axis`` of the constant shape
    input ``index`` (Resize sizes, Reshape shape) to the kept count.
    """

    kind: str
    node: ir.Node
    slot: str
    index: int = 0
    axis: int = 0


@dataclass
class WeightLayer:
    """A Conv/ConvTranspose/Gemm/MatMul with a constant weight: the layers channels pass through."""

    node: ir.Node
    kind: str  # conv | convtranspose | gemm | matmul
    weight_index: int
    out_axis: int  # the weight's output-channel axis
    in_axis: int  # the weight's input-channel axis
    in_slot: str | None = None  # the followed input, when there is one
    out_slot: str | None = None  # the output, when its channels are followed
    depthwise: bool = False


@dataclass
class Group:
    """Units that live in the same tensors; prunable unless ``frozen`` says why not."""

    key: tuple[str, ...]
    units: list[int]
    frozen: str | None = None

    @property
    def size(self) -> int:
        return len(self.units)


@dataclass
class ChannelAnalysis:
    """The result: followed tensors, groups, the edits that follow kept channels, the layers."""

    slots: dict[str, Slot]
    groups: list[Group]
    edits: list[Edit]
    layers: list[WeightLayer]
    roots: dict[str, list[int]]  # slot name -> the unit of each of its channels
    positions: dict[int, dict[str, list[int]]]  # unit -> slot name -> its positions there

    def kept(self, slot: str, removed: set[int]) -> list[int]:
        """Positions of ``slot``'s channels whose unit is not in ``removed``."""
        return [j for j, u in enumerate(self.roots[slot]) if u not in removed]

    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.frozen is None]

    def layer_of(self, slot: str) -> WeightLayer | None:
        """The layer whose output ``slot`` is (None for tensors made by other ops)."""
        return next((layer for layer in self.layers if layer.out_slot == slot), None)


class Analyser:
    """The state rules work on: followed tensors, a union-find of their channels, frozen
    channels with reasons, edits and layers; ``result()`` groups the channels into units."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 13))
        self.slots: dict[str, Slot] = {}
        self.parent: list[int] = []
        self.frozen: dict[str, str] = {}  # slot name -> reason (all its elements are frozen)
        self.frozen_elements: dict[int, str] = {}
        self.edits: list[Edit] = []
        self.layers: list[WeightLayer] = []
        self.handled: set[int] = set()  # ids of the nodes the sweep visited

    # --- union-find and slots ---------------------------------------------------------------

    def fresh(self, count: int) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return list(range(start, start + count))

    def find(self, e: int) -> int:
        while self.parent[e] != e:
            self.parent[e] = self.parent[self.parent[e]]
            e = self.parent[e]
        return e

    def union(self, a: list[int], b: list[int]) -> None:
        for x, y in zip(a, b, strict=True):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def slot(self, value: ir.Value | None) -> Slot | None:
        return None if value is None else self.slots.get(value.name)

    def track(self, value: ir.Value, axis: int, ids: list[int]) -> None:
        self.slots[value.name] = Slot(value, axis, list(ids))

    def freeze(self, value: ir.Value | None, reason: str) -> None:
        slot = self.slot(value)
        if slot is None or value is None:
            return
        self.frozen.setdefault(value.name, reason)
        for e in slot.ids:
            self.frozen_elements.setdefault(e, reason)

    def freeze_inputs(self, node: ir.Node, reason: str) -> None:
        for value in node.inputs:
            self.freeze(value, reason)

    def result(self) -> ChannelAnalysis:
        """Units (classes of tied channels) grouped by the tensors they live in."""
        roots = {name: [self.find(e) for e in slot.ids] for name, slot in self.slots.items()}
        frozen_roots: dict[int, str] = {}
        for e, reason in self.frozen_elements.items():
            frozen_roots.setdefault(self.find(e), reason)
        positions: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for name, units in roots.items():
            for j, u in enumerate(units):
                positions[u][name].append(j)
        by_key: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for unit, where in positions.items():
            by_key[tuple(sorted(where))].append(unit)
        groups = []
        for key, units in by_key.items():
            reason = next((frozen_roots[u] for u in units if u in frozen_roots), None)
            groups.append(Group(key, sorted(units), reason))
        order = {name: i for i, name in enumerate(self.slots)}
        groups.sort(key=lambda g: min(order[n] for n in g.key))
        return ChannelAnalysis(self.slots, groups, self.edits, self.layers, roots, {u: dict(p) for u, p in positions.items()})

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def rank(value: ir.Value | None) -> int | None:
        if value is None or value.shape is None:
            return None
        return value.shape.rank()

    @staticmethod
    def dim(value: ir.Value, axis: int) -> int | None:
        if value.shape is None or axis >= value.shape.rank():
            return None
        d = value.shape[axis]
        return d if isinstance(d, int) else None

    def pass_through(self, node: ir.Node, source: Slot, axis: int | None = None, outputs: int = 1) -> None:
        for out in node.outputs[:outputs]:
            self.track(out, source.axis if axis is None else axis, source.ids)
        for out in node.outputs[outputs:]:
            if out.uses() or out.is_graph_output():
                self.freeze_inputs(node, f"{node.op_type} '{node.name}' has a used extra output")

    def int_attr(self, node: ir.Node, name: str, default: int) -> int:
        attr = node.attributes.get(name)
        return default if attr is None else int(attr.value)

    def ints_attr(self, node: ir.Node, name: str) -> list[int] | None:
        attr = node.attributes.get(name)
        return None if attr is None else [int(v) for v in attr.value]

    def axes_input(self, node: ir.Node, index: int, attr: str) -> list[int] | None:
        """Axes given as an input (newer opsets) or an attribute (older); None when not constant."""
        if len(node.inputs) > index and node.inputs[index] is not None:
            array = const_array(node.inputs[index])
            return None if array is None else [int(a) for a in array.ravel()]
        return self.ints_attr(node, attr)
