"""Tiny hand-built graphs for the prune and lowrank tests, and their MiniLM helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def dense_model(path: Path, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray) -> Path:
    """x [N, k] -> Gemm(W1 [h, k], transB=1, b1) -> Relu -> MatMul(W2 [h, out]) -> y."""
    k, out = w1.shape[1], w2.shape[1]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out])],
        [_init("w1", w1), _init("b1", b1), _init("w2", w2)],
    )
    return save(graph, path)


def matmul_model(path: Path, w: np.ndarray, bias: np.ndarray | None = None, *, gemm_trans_b: bool = False) -> Path:
    """x [N, T, k] @ W [k, n] (+ bias), or a 2-D Gemm (x [N, k]) when ``bias`` is given."""
    k, n = w.shape
    inits = [_init("w", w.T if gemm_trans_b else w)]
    if bias is None:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
        x_shape, y_shape = ["N", "T", k], ["N", "T", n]
    else:
        inits.append(_init("b", bias))
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="proj", transB=int(gemm_trans_b), alpha=1.0)]
        x_shape, y_shape = ["N", k], ["N", n]
    graph = helper.make_graph(
        nodes, "proj",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    return save(graph, path)


def conv_model(path: Path, rng: np.random.Generator) -> Path:
    """x [N, 3, 8, 8] -> Conv 3->8 (3x3) -> Relu -> Conv 8->8 (3x3, group 2) -> Relu -> Conv 8->4 (1x1) -> y."""
    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="relu1"),
        helper.make_node("Conv", ["ar", "c2w"], ["b"], name="conv2", pads=[1, 1, 1, 1], group=2),
        helper.make_node("Relu", ["b"], ["br"], name="relu2"),
        helper.make_node("Conv", ["br", "c3w", "c3b"], ["y"], name="conv3"),
    ]
    inits = [
        _init("c1w", rng.standard_normal((8, 3, 3, 3))), _init("c1b", rng.standard_normal(8)),
        _init("c2w", rng.standard_normal((8, 4, 3, 3))),
        _init("c3w", rng.standard_normal((4, 8, 1, 1))), _init("c3b", rng.standard_normal(4)),
    ]
    graph = helper.make_graph(
        nodes, "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        inits,
    )
    return save(graph, path)


def weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def minilm_or_skip():
    """tests/tasks.py's MiniLM task and the model's path; skips (fails on CI) when it cannot be had."""
    import tasks
    from conftest import real_model_or_skip

    return tasks.get_task("minilm"), real_model_or_skip("minilm")


def minilm_cosine(task, path, pass_name: str, params: dict, calibration: int = 16, held_out: int = 16):
    """(cosine of the mean-pooled embeddings vs the original's on held-out sentences, the pass result)."""
    import onnx_ir as ir

    from onnxsmith.context import Context
    from onnxsmith.data import Dataset
    from onnxsmith.registry import create_pass
    from onnxsmith.runtime import make_session, run_all

    feeds = task.evaluation(held_out)
    cal = task.calibration(calibration)
    ctx = Context(calibration=Dataset({k: np.stack([f[k] for f in cal]) for k in cal[0]}, "minilm"))
    model = ir.load(path)
    reference = run_all(make_session(model, optimize=False), feeds)
    result = create_pass(pass_name, params).run(model, ctx)
    return task.score(reference, run_all(make_session(model, optimize=False), feeds), feeds)["cosine"], result
