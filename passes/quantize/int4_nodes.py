"""Writing 4-bit block-quantized weights into the graph, in the two forms runtimes read.

1. ONNX Runtime's contrib ops (``com.microsoft``), where the backend has their kernels:
   ``MatMul(A, W)`` becomes ``MatMulNBits(A, B, scales[, zero_points])`` with attributes
   K, N, bits=4, block_size, where B is uint8 [N, n_blocks, block/2] (codes of column n
   along K, two per byte, the lower index in the low nibble; symmetric codes stored as
   q + 8, the default zero point), scales float [N * n_blocks] and zero points uint8
   [N * ceil(n_blocks/2)], packed the same way (the odd tail nibble is 8, as ONNX Runtime
   writes it). ``Gather(E, idx)`` becomes ``GatherBlockQuantized(E_q, idx, scales[, zp])``
   with E_q int4/uint4 [V, D] quantized in blocks along D (quantize_axis=1).
2. Standard ONNX (opset 21 blocked quantization) everywhere else: an INT4 (UINT4 when
   asymmetric) initializer, ``DequantizeLinear(w, scale[, zp], axis, block_size)`` feeding
   the unchanged MatMul or Gather.

The node being quantized keeps its name and its output, so reports and the guard still
name the user's layer.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx_ir as ir

from onnxsmith.passes.quantize.blockwise import Int4Weight

__all__ = ["MS_DOMAIN", "dequantize_gather", "dequantize_matmul", "gather_block_quantized", "matmul_nbits", "pack_nbits"]

MS_DOMAIN = "com.microsoft"


def pack_nbits(weight: Int4Weight) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MatMulNBits' (B, scales, zero_points) for ``weight`` [K, N]."""
    k, n = weight.shape
    block = weight.block
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), dtype=np.uint8)  # the kernel never reads the padding; ONNX Runtime writes 0
    padded[:k] = (weight.codes.astype(np.int16) + (8 if weight.symmetric else 0)).astype(np.uint8)
    per_column = padded.T.reshape(n, blocks, block)
    b = _pack_pairs(per_column)
    scales = np.ascontiguousarray(weight.scales.T).reshape(-1).astype(np.float32)
    if weight.symmetric:
        return b, scales, None
    zero_points = weight.zero_points.T  # [N, n_blocks]
    if blocks % 2:
        zero_points = np.concatenate([zero_points, np.full((n, 1), 8, dtype=np.uint8)], axis=1)
    return b, scales, _pack_pairs(zero_points).reshape(-1)


def matmul_nbits(graph: ir.Graph, node: ir.Node, weight: Int4Weight, cache: dict[str, list[ir.Value]]) -> ir.Node:
    """Replace ``MatMul(A, W)`` with MatMulNBits; returns the new node (same name and output)."""
    key = f"{node.inputs[1].name}:nbits"
    if key not in cache:
        b, scales, zero_points = pack_nbits(weight)
        base = node.inputs[1].name
        cache[key] = [_initializer(graph, b, f"{base}_Q4"), _initializer(graph, scales, f"{base}_scales")]
        if zero_points is not None:
            cache[key].append(_initializer(graph, zero_points, f"{base}_zero_points"))
    k, n = weight.shape
    new = ir.node(
        "MatMulNBits", [node.inputs[0], *cache[key]], domain=MS_DOMAIN, name=node.name,
        attributes={"K": k, "N": n, "bits": 4, "block_size": weight.block},
    )
    _swap(graph, node, new)
    return new


def dequantize_matmul(graph: ir.Graph, node: ir.Node, weight: Int4Weight, cache: dict[str, list[ir.Value]]) -> ir.Node:
    """Feed ``MatMul(A, W)`` from ``DequantizeLinear`` of an int4 W; returns the DequantizeLinear."""
    return _dequantize_input(graph, node, 1, weight, axis=0, cache=cache, transposed=False)


def gather_block_quantized(graph: ir.Graph, node: ir.Node, weight: Int4Weight, cache: dict[str, list[ir.Value]]) -> ir.Node:
    """Replace ``Gather(E, idx)`` (axis 0) with GatherBlockQuantized; ``weight`` is E.T
    quantized (blocks along D)."""
    key = f"{node.inputs[0].name}:gbq"
    if key not in cache:
        base = node.inputs[0].name
        cache[key] = _typed_int4(graph, weight, base, transposed=True)
    data, scales, *zero_point = cache[key]
    new = ir.node(
        "GatherBlockQuantized", [data, node.inputs[1], scales, *zero_point], domain=MS_DOMAIN, name=node.name,
        attributes={"gather_axis": 0, "quantize_axis": 1, "block_size": weight.block},
    )
    _swap(graph, node, new)
    return new


def dequantize_gather(graph: ir.Graph, node: ir.Node, weight: Int4Weight, cache: dict[str, list[ir.Value]]) -> ir.Node:
    """Feed ``Gather(E, idx)`` from ``DequantizeLinear`` of an int4 E (blocks along D)."""
    return _dequantize_input(graph, node, 0, weight, axis=1, cache=cache, transposed=True)


def _dequantize_input(graph, node, index, weight, *, axis, cache, transposed) -> ir.Node:
    source = node.inputs[index]
    key = f"{source.name}:dq"
    if key not in cache:
        inputs = _typed_int4(graph, weight, source.name, transposed=transposed)
        dq = ir.node("DequantizeLinear", inputs, attributes={"axis": axis, "block_size": weight.block},
                     name=f"{node.name}/dequantize_int4")
        dq.outputs[0].name = f"{source.name}_dequantized"
        dq.outputs[0].dtype = ir.DataType.FLOAT
        dq.outputs[0].shape = source.shape
        graph.insert_before(node, dq)
        cache[key] = [dq.outputs[0]]
    node.replace_input_with(index, cache[key][0])
    return cache[key][0].producer()


def _typed_int4(graph: ir.Graph, weight: Int4Weight, base: str, *, transposed: bool) -> list[ir.Value]:
    """INT4 (UINT4 when asymmetric) codes, float scales and zero points, as initializers;
    ``transposed`` stores them [N, K] / [N, n_blocks] (a table quantized along its rows)."""
    orient = (lambda a: np.ascontiguousarray(a.T)) if transposed else (lambda a: a)
    dtype = ml_dtypes.int4 if weight.symmetric else ml_dtypes.uint4
    values = [
        _initializer(graph, orient(weight.codes).astype(dtype), f"{base}_Q4"),
        _initializer(graph, orient(weight.scales).astype(np.float32), f"{base}_scales"),
    ]
    if not weight.symmetric:
        values.append(_initializer(graph, orient(weight.zero_points).astype(ml_dtypes.uint4), f"{base}_zero_points"))
    return values


def _pack_pairs(values: np.ndarray) -> np.ndarray:
    """Two 4-bit values per byte along the last axis (even length), the first in the low nibble."""
    values = values.astype(np.uint8)
    return (values[..., 0::2] & 0x0F) | ((values[..., 1::2] & 0x0F) << 4)


def _initializer(graph: ir.Graph, array: np.ndarray, name: str) -> ir.Value:
    unique, i = name, 1
    while unique in graph.initializers:
        unique, i = f"{name}.{i}", i + 1
    tensor = ir.tensor(array, name=unique)
    value = ir.Value(name=unique, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
    graph.register_initializer(value)
    return value


def _swap(graph: ir.Graph, old: ir.Node, new: ir.Node) -> None:
    ir.convenience.replace_nodes_and_values(graph, old, [old], [new], old.outputs, new.outputs)
