"""Each layer's int8 speed, measured on the target backend instead of assumed.

Whether int8 pays for a layer depends on the CPU and the runtime (MLAS's int8 depthwise
convolutions lose to its float NCHWc ones on AVX2, VNNI changes the balance, OpenVINO has
other kernels), so the int8 plan times it:

1. Profile the float model and a candidate with every planned layer in int8 on the target
   backend, the same feeds, with the per-layer profiler (core/profile.py), in alternating
   blocks (float, int8, float, int8), and keep for each layer each model's fastest block.
   On a shared machine a burst of load can double a model's latency for seconds: on a
   2-core VM, PP-OCRv4 rec's int8 artifact profiled 8 ms in four of six runs and 16-17 ms
   in two. Profiled once each, one after the other, a burst during the int8 profile made
   every MatMul of rec slower in int8 (gains of -0.008 to -0.020 ms, against +0.003 to
   +0.009 ms in the next build). A burst spoils one block; alternating, it cannot spoil
   both blocks of one model unless it lasts through three.
2. A layer's float time: the kernels whose origin includes it (a Conv fused with its
   activation counts once). Its int8 time: the kernels whose origin includes it, plus the
   QuantizeLinear/DequantizeLinear kernels the runtime left standing around it: a Q/DQ
   kernel is charged to the layer it feeds, else to the layer whose output it converts
   (region entries and exits, layout changes between int8 and float kernels).
3. The gain is float minus int8 time; a layer whose gain is not above the noise of the two
   measurements (their p90 - median spread) is slower or no faster in int8 on this target.

Kernels no layer owns (a float Add between two int8 regions, layout reorders the runtime
inserted) are in neither time: a prediction from the per-layer gains is checked against
the measured end-to-end latency, not against them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxsmith.backend import Backend
from onnxsmith.costs import CostTable
from onnxsmith.profile import Profile

__all__ = ["LayerSpeed", "SpeedTable", "costs_table", "measure_layer_speed"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")
BLOCKS = 2  # profiles of each model, alternated (see 1. above)


@dataclass
class LayerSpeed:
    float_ms: float
    int8_ms: float
    noise_ms: float  # the larger p90 - median spread of the layer's kernels in the two runs

    @property
    def gain_ms(self) -> float:
        return self.float_ms - self.int8_ms

    @property
    def pays(self) -> bool:
        """int8 is measurably faster for this layer."""
        return self.gain_ms > self.noise_ms

    def to_dict(self) -> dict[str, float]:
        return {"float_ms": round(self.float_ms, 5), "int8_ms": round(self.int8_ms, 5), "gain_ms": round(self.gain_ms, 5),
                "noise_ms": round(self.noise_ms, 5)}


@dataclass
class SpeedTable:
    """Per layer its measured speed, and the two end-to-end medians it came from."""

    layers: dict[str, LayerSpeed]
    float_ms: float
    int8_ms: float

    def gain_of(self, names: set[str]) -> tuple[float, float]:
        """The summed gain of the layers ``names`` in int8, and their summed noise (ms)."""
        speeds = [speed for name, speed in self.layers.items() if name in names]
        return sum(s.gain_ms for s in speeds), sum(s.noise_ms for s in speeds)

    def predict_ms(self, int8_layers: set[str]) -> float:
        """End-to-end time predicted with ``int8_layers`` in int8 and the rest float."""
        return self.float_ms - self.gain_of(int8_layers)[0]


def measure_layer_speed(backend: Backend, float_model: ir.Model, int8_model: ir.Model, layers: list[str],
                        feeds: list[dict[str, np.ndarray]], *, runs: int = 10, warmup: int = 2,
                        blocks: int = BLOCKS) -> SpeedTable:
    """The SpeedTable of ``layers`` (node names of ``float_model``, kept in ``int8_model``):
    ``blocks`` profiles of each model of ``runs // blocks`` timed runs, alternated."""
    wanted = set(layers)
    owners = _qdq_owners(int8_model, wanted)
    block_runs = max(runs // blocks, 3)
    float_blocks: list[Profile] = []
    int8_blocks: list[Profile] = []
    for _ in range(blocks):
        float_blocks.append(backend.profile(float_model, feeds, runs=block_runs, warmup=warmup))
        int8_blocks.append(backend.profile(int8_model, feeds, runs=block_runs, warmup=warmup))
    float_ms, float_noise = _fastest_block([_by_layer(p, wanted, {}) for p in float_blocks])
    int8_ms, int8_noise = _fastest_block([_by_layer(p, wanted, owners) for p in int8_blocks])
    table = {name: LayerSpeed(float_ms.get(name, 0.0), int8_ms.get(name, 0.0),
                              max(float_noise.get(name, 0.0), int8_noise.get(name, 0.0))) for name in layers}
    return SpeedTable(table, min(p.total.median_ms for p in float_blocks), min(p.total.median_ms for p in int8_blocks))


def _fastest_block(blocks: list[tuple[dict[str, float], dict[str, float]]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per layer, its time and noise (``_by_layer``) in the block where it ran fastest: load
    from elsewhere only ever adds time."""
    times: dict[str, float] = {}
    noise: dict[str, float] = {}
    for block_times, block_noise in blocks:
        for name, ms in block_times.items():
            if name not in times or ms < times[name]:
                times[name], noise[name] = ms, block_noise.get(name, 0.0)
    return times, noise


def costs_table(costs: CostTable, layers: list[str]) -> SpeedTable:
    """The SpeedTable of ``layers`` from a cost table measured on the target (``--costs``);
    layers it lacks are left out. End to end: the sums over the layers it has."""
    table = {name: LayerSpeed(c.float_ms, c.int8_ms, c.noise_ms) for name in layers if (c := costs.layers.get(name))}
    return SpeedTable(table, sum(s.float_ms for s in table.values()), sum(s.int8_ms for s in table.values()))


def _by_layer(profile: Profile, wanted: set[str], owners: dict[str, list[str]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per wanted layer, the median time of the kernels charged to it and their spread."""
    times: dict[str, float] = {}
    noise: dict[str, float] = {}
    for layer in profile.layers:
        names = [n for n in layer.origin if n in wanted]
        if not names:
            names = sorted({owner for n in (*layer.origin, layer.node) for owner in owners.get(n, [])})
        for name in names:  # a kernel standing for several layers is shared out evenly
            times[name] = times.get(name, 0.0) + layer.median_ms / len(names)
            noise[name] = noise.get(name, 0.0) + (layer.p90_ms - layer.median_ms) / len(names)
    return times, noise


def _qdq_owners(model: ir.Model, wanted: set[str]) -> dict[str, list[str]]:
    """Per Q/DQ node of ``model``, the wanted layers it is charged to: the ones it feeds
    (through other Q/DQ nodes), else the one whose output it converts."""
    owners: dict[str, list[str]] = {}
    for node in model.graph:
        if node.op_type not in _QDQ or not node.name:
            continue
        fed = _walk(node, wanted, forward=True)
        owners[node.name] = fed or _walk(node, wanted, forward=False)
    return owners


def _walk(node: ir.Node, wanted: set[str], *, forward: bool) -> list[str]:
    """The wanted layers reached from ``node`` through Q/DQ nodes only, downstream or upstream."""
    found: list[str] = []
    stack, seen = [node], {id(node)}
    while stack:
        current = stack.pop()
        if forward:
            neighbours = [user for out in current.outputs for user, _ in out.uses()]
        else:
            neighbours = [v.producer() for v in current.inputs[:1] if v is not None and v.producer() is not None]
        for other in neighbours:
            if id(other) in seen:
                continue
            seen.add(id(other))
            if other.name in wanted:
                found.append(other.name)
            elif other.op_type in _QDQ:
                stack.append(other)
    return sorted(set(found))
