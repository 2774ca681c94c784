"""Every rule of the fuse catalogue on tiny graphs: where it fires and where it must not.

One table, ``CASES``, holds for each rule name of ``catalogue.RULES`` at least one positive
case (the rule fires, the ops left are the expected ones, outputs equal the original's
within the case's tolerance, with ONNX Runtime's own optimizations off) and at least one
negative case (the rule does not fire, the graph keeps its ops, outputs are bit-identical,
and where the rule explains itself the report's note gives the reason). A rule added to
the catalogue without cases here fails ``test_every_rule_has_cases``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fuse_helpers
from fuse_helpers import CpuWithSlowOneChannelConvTranspose, CpuWithoutSlowOps, const, make, rand, run_fuse
from onnxsmith.passes.fuse.catalogue import RULES

MS = "com.microsoft"


@pytest.fixture(autouse=True)
def _fresh_random_stream():
    fuse_helpers.reseed()


X4 = {"x": [1, 3, 8, 8]}
X3 = {"x": [2, 5, 16]}
I64 = lambda *v: np.array(v, np.int64)  # noqa: E731


@dataclass(frozen=True)
class Case:
    """A tiny model for one rule; ``fires`` says which way it must go."""

    label: str
    build: Callable[[], onnx.ModelProto]
    fires: bool
    ops_after: tuple[str, ...] | None = None  # expected op types when it fires...
    makes: str | None = None  # ...or an op it must have made (rules that add Reshapes/Transposes around it)
    reason: str | None = None  # a phrase of the refusal note when it does not
    atol: float = 1e-5
    scale: float = 1.0  # of the random inputs
    backend: Callable[[], object] | str = "cpu"


def _feeds(model: onnx.ModelProto, scale: float) -> dict[str, np.ndarray]:
    feeds = {}
    for value in model.graph.input:
        shape = [d.dim_value if d.HasField("dim_value") else 3 for d in value.type.tensor_type.shape.dim]  # symbolic dims: 3
        if value.type.tensor_type.elem_type == TensorProto.INT64:
            feeds[value.name] = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        elif not shape:  # scalar parameters (an epsilon, a bound) given as graph inputs
            feeds[value.name] = np.array(0.5, np.float32)
        else:
            feeds[value.name] = rand(*shape, scale=scale)
    return feeds


def N(op: str, inputs: list[str], outputs: list[str], domain: str = "", **attrs) -> onnx.NodeProto:  # noqa: N802
    return helper.make_node(op, inputs, outputs, domain=domain or None, **attrs)


# --- builders, one or more per rule ------------------------------------------------------------


def noop(kind: str):
    def build():
        if kind == "fires":
            nodes = [N("Mul", ["x", "one"], ["a"]), N("Dropout", ["a"], ["b"]), N("Cast", ["b"], ["c"], to=TensorProto.FLOAT),
                     N("Relu", ["c"], ["y"])]
            return make(nodes, X4, {"y": None}, [const("one", np.float32(1))])
        return make([N("Mul", ["x", "two"], ["a"]), N("Relu", ["a"], ["y"])], X4, {"y": None}, [const("two", np.float32(2))])
    return build


def transposes(shared: bool):
    def build():
        nodes = [N("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]), N("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2]),
                 N("Relu", ["b"], ["y"])]
        return make(nodes, X4, {"y": None, **({"a": None} if shared else {})})
    return build


def reshapes(shared: bool, copies_a_dim: bool = False):
    def build():
        nodes = [N("Reshape", ["x", "s1"], ["a"]), N("Reshape", ["a", "s2"], ["y"])]
        target = I64(0, 3, 2) if copies_a_dim else I64(3, 8)
        return make(nodes, {"x": [2, 12]}, {"y": None, **({"a": None} if shared else {})},
                    [const("s1", I64(4, 6)), const("s2", target)])
    return build


def squeeze_pair(axes_out: int):
    def build():
        nodes = [N("Unsqueeze", ["x", "a1"], ["u"]), N("Squeeze", ["u", "a2"], ["s"]), N("Relu", ["s"], ["y"])]
        return make(nodes, {"x": [2, 1, 4]}, {"y": None}, [const("a1", I64(1)), const("a2", I64(axes_out))])
    return build


def slices(whole: bool):
    def build():
        start, end = (0, 2**62) if whole else (1, 3)
        nodes = [N("Slice", ["x", "st", "en", "ax", "one"], ["s"]), N("Relu", ["s"], ["y"])]
        return make(nodes, X4, {"y": None}, [const("st", I64(start)), const("en", I64(end)), const("ax", I64(1)), const("one", I64(1))])
    return build


def conv_bn(shared_weight: bool):
    def build():
        nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), N("BatchNormalization", ["c", "g", "beta", "m", "v"], ["y"], name="bn")]
        outputs = {"y": None}
        if shared_weight:
            nodes.append(N("Conv", ["x", "w"], ["z"], pads=[1, 1, 1, 1]))
            outputs["z"] = None
        return make(nodes, X4, outputs, [const("w", rand(4, 3, 3, 3)), const("b", rand(4)), *_bn_params(4)])
    return build


def _bn_params(c: int):
    return [const("g", rand(c) + 2), const("beta", rand(c)), const("m", rand(c)), const("v", np.abs(rand(c)) + 0.5)]


def gemm_bn():
    nodes = [N("Gemm", ["x", "w", "b"], ["g"], transB=1), N("BatchNormalization", ["g", "gamma", "beta", "m", "v"], ["y"])]
    inits = [const("w", rand(4, 6)), const("b", rand(4)), const("gamma", rand(4) + 2), const("beta", rand(4)),
             const("m", rand(4)), const("v", np.abs(rand(4)) + 0.5)]
    return make(nodes, {"x": [3, 6]}, {"y": None}, inits)


def conv_transpose_bn():
    nodes = [N("ConvTranspose", ["x", "w"], ["c"], strides=[2, 2]), N("BatchNormalization", ["c", "g", "beta", "m", "v"], ["y"])]
    return make(nodes, X4, {"y": None}, [const("w", rand(3, 4, 2, 2)), *_bn_params(4)])


def conv_affine(per_channel: bool):
    def build():
        scale = rand(4, 1, 1) if per_channel else rand(4, 6, 6)
        return make([N("Conv", ["x", "w"], ["c"]), N("Mul", ["c", "s"], ["y"])], X4, {"y": None}, [const("w", rand(4, 3, 3, 3)), const("s", scale)])
    return build


def affine_conv(scale_first: bool, pads: int):
    """Mul(scalar) + Add(scalar) in front of a Conv: foldable into its weights and bias only
    without padding (padded zeros would stand for the offset). PP-LCNetV3 (Paddle) writes the
    Mul with the scale first."""
    def build():
        mul = N("Mul", ["s", "x"] if scale_first else ["x", "s"], ["m"])
        nodes = [mul, N("Add", ["m", "o"], ["a"]), N("Conv", ["a", "w", "b"], ["y"], pads=[pads] * 4)]
        return make(nodes, X4, {"y": None}, [const("s", np.float32([1.7])), const("o", np.float32([0.3])),
                                              const("w", rand(4, 3, 1 + 2 * pads, 1 + 2 * pads)), const("b", rand(4))])
    return build


def gemm_affine(per_column: bool):
    def build():
        operand = rand(5) if per_column else rand(2, 5)
        return make([N("Gemm", ["x", "w", "b"], ["g"], transB=1), N("Add", ["g", "k"], ["y"])], {"x": [2, 4]}, {"y": None},
                    [const("w", rand(5, 4)), const("b", rand(5)), const("k", operand)])
    return build


def pad_conv(mode: str):
    def build():
        return make([N("Pad", ["x", "p"], ["xp"], mode=mode), N("Conv", ["xp", "w"], ["y"])], X4, {"y": None},
                    [const("p", I64(0, 0, 1, 1, 0, 0, 1, 1)), const("w", rand(4, 3, 3, 3))])
    return build


def matmul_add(rank: int):
    def build():
        shape = [2, 4] if rank == 2 else [3, 2, 4]
        return make([N("MatMul", ["x", "w"], ["m"]), N("Add", ["m", "b"], ["y"])], {"x": shape}, {"y": None},
                    [const("w", rand(4, 5)), const("b", rand(5))])
    return build


def flattened_linear(bias_shape: list[int]):
    """Reshape(x W + b, [-1, 5]) on x [2, 3, 4]: flattened after the MatMul."""
    def build():
        nodes = [N("MatMul", ["x", "w"], ["m"]), N("Add", ["m", "b"], ["a"]), N("Reshape", ["a", "flat"], ["y"])]
        return make(nodes, {"x": [2, 3, 4]}, {"y": None}, [const("w", rand(4, 5)), const("b", rand(*bias_shape)), const("flat", I64(-1, 5))])
    return build


def same_shape_reshape(target: list[int]):
    """Reshape of x [n, 16] (n symbolic) to ``target``."""
    def build():
        return make([N("Reshape", ["x", "s"], ["r"]), N("Relu", ["r"], ["y"])], {"x": ["n", 16]}, {"y": None}, [const("s", I64(*target))])
    return build


def min_max(constant_bound: bool):
    def build():
        inputs = {**X4, **({} if constant_bound else {"hi": []})}
        inits = [const("lo", np.float32(0))] + ([const("hi", np.float32(0.5))] if constant_bound else [])
        return make([N("Min", ["x", "hi"], ["a"]), N("Max", ["a", "lo"], ["y"])], inputs, {"y": None}, inits)
    return build


def hardswish(alpha: float):
    def build():
        return make([N("HardSigmoid", ["x"], ["h"], alpha=alpha, beta=0.5), N("Mul", ["x", "h"], ["y"])], X4, {"y": None})
    return build


def expand(redundant: bool):
    def build():
        other = [3, 4] if redundant else [1, 4]
        return make([N("Expand", ["x", "shape"], ["e"]), N("Add", ["e", "z"], ["y"])], {"x": [1, 4], "z": other}, {"y": None},
                    [const("shape", I64(3, 4))])
    return build


def zero_bias(zero: bool):
    def build():
        bias = np.zeros(4, np.float32) if zero else rand(4)
        return make([N("Conv", ["x", "w", "b"], ["y"])], X4, {"y": None}, [const("w", rand(4, 3, 3, 3)), const("b", bias)])
    return build


def layernorm(opset: int, eps_input: bool = False, axis: int = -1):
    """Before opset 18 the ReduceMeans take ``axes`` as an attribute (rules_layernorm.py)."""
    def build():
        def mean(inp, out):
            return N("ReduceMean", [inp, "axes"], [out], keepdims=1) if opset >= 18 else N("ReduceMean", [inp], [out], axes=[axis])
        nodes = [
            mean("x", "mean"), N("Sub", ["x", "mean"], ["d"]), N("Pow", ["d", "two"], ["d2"]),
            mean("d2", "var"), N("Add", ["var", "eps"], ["ve"]), N("Sqrt", ["ve"], ["std"]),
            N("Div", ["d", "std"], ["n"]), N("Mul", ["n", "gamma"], ["ng"]), N("Add", ["ng", "beta"], ["y"]),
        ]
        inits = [const("two", np.float32(2)), const("gamma", rand(16)), const("beta", rand(16))]
        if opset >= 18:
            inits.append(const("axes", I64(axis)))
        inputs = dict(X3)
        if eps_input:
            inputs["eps"] = []
        else:
            inits.append(const("eps", np.float32(1e-5)))
        return make(nodes, inputs, {"y": None}, inits, opset=opset)
    return build


def erf_gelu(divisor: float):
    def build():
        nodes = [N("Div", ["x", "k"], ["a"]), N("Erf", ["a"], ["e"]), N("Add", ["e", "one"], ["b"]), N("Mul", ["x", "b"], ["c"]),
                 N("Mul", ["c", "half"], ["y"])]
        return make(nodes, X3, {"y": None}, [const("k", np.float32(divisor)), const("one", np.float32(1)), const("half", np.float32(0.5))])
    return build


def rms_norm(eps_input: bool):
    def build():
        nodes = [N("Pow", ["x", "two"], ["sq"]), N("ReduceMean", ["sq", "axes"], ["ms"], keepdims=1, noop_with_empty_axes=0),
                 N("Add", ["ms", "eps"], ["mse"]),
                 N("Sqrt", ["mse"], ["rms"]), N("Reciprocal", ["rms"], ["inv"]), N("Mul", ["x", "inv"], ["n"]), N("Mul", ["n", "scale"], ["y"])]
        inits = [const("two", np.float32(2)), const("axes", I64(-1)), const("scale", rand(16))]
        inputs = dict(X3)
        if eps_input:
            inputs["eps"] = []
        else:
            inits.append(const("eps", np.float32(1e-6)))
        return make(nodes, inputs, {"y": None}, inits, opset=18)
    return build


def skip_layernorm(skip_shape: list[int]):
    def build():
        nodes = [N("Add", ["x", "skip"], ["s"]), N("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
        return make(nodes, {**X3, "skip": skip_shape}, {"y": None}, [const("gamma", rand(16)), const("beta", rand(16))])
    return build


def rotary(neg_first_half: bool):
    """The rotate-half rotary embedding of Llama-style models on x [B, H, S, E] (E = 8)."""
    def build():
        first, second = ("x2", "x1") if neg_first_half else ("x1", "x2")
        nodes = [
            N("Unsqueeze", ["pos", "ax1"], ["p3"]), N("Cast", ["p3"], ["pf"], to=TensorProto.FLOAT),
            N("MatMul", ["inv_freq", "pf"], ["freqs"]), N("Transpose", ["freqs"], ["ft"], perm=[0, 2, 1]),
            N("Concat", ["ft", "ft"], ["emb"], axis=-1), N("Cos", ["emb"], ["cos3"]), N("Sin", ["emb"], ["sin3"]),
            N("Unsqueeze", ["cos3", "ax1"], ["cos"]), N("Unsqueeze", ["sin3", "ax1"], ["sin"]),
            N("Slice", ["x", "s0", "s4", "ax3", "one"], ["x1"]), N("Slice", ["x", "s4", "s8", "ax3", "one"], ["x2"]),
            N("Neg", [second], ["neg"]), N("Concat", ["neg", first], ["rot"], axis=-1),
            N("Mul", ["x", "cos"], ["xc"]), N("Mul", ["rot", "sin"], ["rs"]), N("Add", ["xc", "rs"], ["y"]),
        ]
        inits = [const("inv_freq", np.array([1.0, 0.5, 0.25, 0.125], np.float32).reshape(1, 4, 1)), const("ax1", I64(1)),
                 const("ax3", I64(3)), const("s0", I64(0)), const("s4", I64(4)), const("s8", I64(8)), const("one", I64(1))]
        return make(nodes, {"x": [1, 4, 6, 8], "pos": [1, 6]}, {"y": None}, inits, opset=18, input_types={"pos": TensorProto.INT64})
    return build


def sdpa(variant: bool):
    """Attention of q, k, v [B, H, S, Dh] (B=1, H=2, S=5, Dh=4); the variant scales the
    probabilities after Softmax, which no fusion understands."""
    def build():
        nodes = [N("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), N("MatMul", ["q", "kt"], ["qk"]), N("Mul", ["qk", "scale"], ["qks"]),
                 N("Softmax", ["qks"], ["p"], axis=-1)]
        if variant:
            nodes.append(N("Mul", ["p", "damp"], ["pd"]))
        nodes.append(N("MatMul", ["pd" if variant else "p", "v"], ["y"]))
        shape = [1, 2, 5, 4]
        return make(nodes, {"q": shape, "k": shape, "v": shape}, {"y": None},
                    [const("scale", np.float32(0.5)), const("damp", np.float32(0.9))])
    return build


def bias_gelu(bias_rank: int):
    def build():
        bias = rand(16) if bias_rank == 1 else rand(1, 16)
        return make([N("Add", ["x", "b"], ["a"]), N("Gelu", ["a"], ["y"], domain=MS)], X3, {"y": X3["x"]}, [const("b", bias)])
    return build


def residual(skip_shape: list[int], bias_first: bool = True):
    """A post-LN transformer residual: LayerNorm(x @ W + b + skip) over [2, 5, 16]."""
    def build():
        nodes = [N("MatMul", ["x", "w"], ["m"]), N("Add", ["m", "b"] if bias_first else ["b", "m"], ["mb"]), N("Add", ["mb", "skip"], ["s"]),
                 N("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
        return make(nodes, {**X3, "skip": skip_shape}, {"y": None},
                    [const("w", rand(16, 16)), const("b", rand(16)), const("gamma", rand(16)), const("beta", rand(16))])
    return build


def conv_act(shared: bool):
    def build():
        return make([N("Conv", ["x", "w"], ["c"]), N("Relu", ["c"], ["y"])], X4, {"y": None, **({"c": None} if shared else {})},
                    [const("w", rand(4, 3, 3, 3))])
    return build


def silu(shared: bool):
    def build():
        nodes = [N("Sigmoid", ["x"], ["s"]), N("Mul", ["s", "x"], ["y"])]
        return make(nodes, X4, {"y": None, **({"s": None} if shared else {})})
    return build


def softmax(axis: int, op_type: str = "Softmax", opset: int = 17):
    def build():
        return make([N(op_type, ["x"], ["y"], axis=axis)], {"x": [1, 4, 16, 20]}, {"y": None}, opset=opset)
    return build


def conv_transpose(c_out: int, kernel: int, stride: int, bias: bool = True):
    def build():
        inputs = ["x", "w", "b"] if bias else ["x", "w"]
        inits = [const("w", rand(3, c_out, kernel, kernel)), *([const("b", rand(c_out))] if bias else [])]
        return make([N("ConvTranspose", inputs, ["y"], kernel_shape=[kernel, kernel], strides=[stride, stride])], X4,
                    {"y": None}, inits)
    return build


def transposed_matmul(perm: list[int]):
    def build():
        a, b = ([4, 3], [4, 5]) if len(perm) == 2 else ([2, 4, 3], [4, 3, 5])
        return make([N("Transpose", ["a"], ["at"], perm=perm), N("MatMul", ["at", "b"], ["y"])], {"a": a, "b": b}, {"y": None})
    return build


CASES: dict[str, list[Case]] = {
    "noop": [Case("x*1, Dropout, Cast to float", noop("fires"), True, ("Relu",)),
             Case("Reshape of [n, 16] to [-1, 16]", same_shape_reshape([-1, 16]), True, ("Relu",)),
             Case("x*2 is not a no-op", noop("keeps"), False),
             Case("Reshape of [n, 16] to [-1, 8]", same_shape_reshape([-1, 8]), False)],
    "transpose": [Case("pair that cancels", transposes(shared=False), True, ("Relu",)),
                  Case("the first Transpose's output is also used", transposes(shared=True), False, reason="other uses")],
    "reshape": [Case("two Reshapes", reshapes(shared=False), True, ("Reshape",)),
                Case("two Reshapes, the first also read elsewhere", reshapes(shared=True), True, ("Reshape", "Reshape")),
                Case("the second copies a dim of the first (0) that is also read elsewhere", reshapes(shared=True, copies_a_dim=True),
                     False, reason="copies a dim (0) of the intermediate")],
    "squeeze-unsqueeze": [Case("Squeeze(Unsqueeze(x, 1), 1)", squeeze_pair(1), True, ("Relu",)),
                          Case("other axes", squeeze_pair(2), False, reason="axes differ")],
    "slices": [Case("Slice of everything", slices(whole=True), True, ("Relu",)),
               Case("Slice of part", slices(whole=False), False)],
    "batchnorm": [Case("into Conv", conv_bn(shared_weight=False), True, ("Conv",)),
                  Case("into Gemm", gemm_bn, True, ("Gemm",)),
                  Case("into ConvTranspose", conv_transpose_bn, True, ("ConvTranspose",)),
                  Case("the Conv weight is shared", conv_bn(shared_weight=True), False, reason="used by another node")],
    "conv-affine": [Case("per-channel Mul", conv_affine(per_channel=True), True, ("Conv",)),
                    Case("spatially varying Mul", conv_affine(per_channel=False), False, reason="not a per-channel constant"),
                    Case("scalar affine before an unpadded Conv", affine_conv(scale_first=False, pads=0), True, ("Conv",)),
                    Case("the same, scale first (Paddle)", affine_conv(scale_first=True, pads=0), True, ("Conv",)),
                    Case("scalar affine before a padded Conv", affine_conv(scale_first=True, pads=1), False)],
    "gemm-affine": [Case("per-column Add", gemm_affine(per_column=True), True, ("Gemm",)),
                    Case("full-matrix Add", gemm_affine(per_column=False), False, reason="not a per-channel constant")],
    "pad-conv": [Case("constant zero Pad", pad_conv("constant"), True, ("Conv",)),
                 Case("reflect Pad", pad_conv("reflect"), False)],
    "matmul-add": [Case("2-D input", matmul_add(2), True, ("Gemm",)),
                   Case("3-D input flattened after the Add", flattened_linear([5]), True, ("Reshape", "Gemm")),
                   Case("flattened, with a bias that is not per column", flattened_linear([3, 1]), False, reason="does not broadcast"),
                   Case("3-D input (Gemm is 2-D only)", matmul_add(3), False, reason="Rank of input_a and input_b must be 2")],
    "clip": [Case("Max(Min(x, 0.5), 0)", min_max(constant_bound=True), True, ("Clip",)),
             Case("a bound that is a graph input", min_max(constant_bound=False), False, reason="is not a constant")],
    "hardswish": [Case("x * HardSigmoid(x, 1/6, 0.5)", hardswish(1 / 6), True, ("HardSwish",), scale=4),
                  Case("HardSigmoid with alpha 0.2", hardswish(0.2), False, reason="alpha")],
    "expand": [Case("Expand that Add broadcasts anyway", expand(redundant=True), True, ("Add",)),
               Case("Expand that sets the output shape", expand(redundant=False), False)],
    "optional-bias": [Case("all-zero Conv bias", zero_bias(zero=True), True, ("Conv",)),
                      Case("non-zero bias", zero_bias(zero=False), False)],
    "layernorm": [Case("decomposed LayerNorm, opset 18", layernorm(18), True, ("LayerNormalization",), atol=1e-4),
                  Case("opset 17: axes=[-1] as an attribute", layernorm(17), True, ("LayerNormalization",), atol=1e-4),
                  Case("opset 17: axes=[2], the last of rank 3", layernorm(17, axis=2), True, ("LayerNormalization",), atol=1e-4),
                  Case("opset 17: the mean over axis 1", layernorm(17, axis=1), False, reason="not over the last axis alone"),
                  Case("epsilon is a graph input", layernorm(18, eps_input=True), False, reason="Epsilon is not a constant scalar")],
    "gelu": [Case("erf GELU", erf_gelu(math.sqrt(2)), True, ("Gelu",), atol=1e-5, scale=3),
             Case("x / 1.5 inside erf is not GELU", erf_gelu(1.5), False)],
    "rms-norm": [Case("decomposed RMS norm", rms_norm(eps_input=False), True, ("SimplifiedLayerNormalization",), atol=1e-5),
                 Case("epsilon is a graph input", rms_norm(eps_input=True), False, reason="Epsilon is not a float value")],
    "skip-layernorm": [Case("residual Add + LayerNorm", skip_layernorm([2, 5, 16]), True, ("SkipLayerNormalization",), backend=CpuWithoutSlowOps),
                       Case("the skip broadcasts (1-D)", skip_layernorm([16]), False, reason="does not match expected dimensions",
                            backend=CpuWithoutSlowOps),
                       Case("a backend whose SkipLayerNormalization is slow", skip_layernorm([2, 5, 16]), False)],
    "rotary": [Case("rotate-half rotary embedding", rotary(neg_first_half=False), True, makes="RotaryEmbedding"),
               Case("negates the wrong half", rotary(neg_first_half=True), False)],
    "attention": [Case("softmax(q k^T * s) v", sdpa(variant=False), True, makes="MultiHeadAttention"),
                  Case("probabilities scaled after Softmax", sdpa(variant=True), False)],
    "bias-gelu": [Case("Add of a 1-D bias + Gelu", bias_gelu(1), True, ("BiasGelu",), scale=3),
                  Case("2-D bias", bias_gelu(2), False, reason="bias is not of shape 1D tensor")],
    "conv-activation": [Case("Conv + Relu", conv_act(shared=False), True, ("FusedConv",)),
                        Case("the Conv output is also used", conv_act(shared=True), False, reason="other uses")],
    "silu": [Case("x * Sigmoid(x)", silu(shared=False), True, ("QuickGelu",), scale=4),
             Case("the Sigmoid output is also used", silu(shared=True), False, reason="other uses")],
    "softmax-last-axis": [Case("Softmax over axis 1 of 4", softmax(1), True, ("Transpose", "Softmax", "Transpose"), scale=3),
                          Case("LogSoftmax over axis 1 of 4", softmax(1, "LogSoftmax"), True, ("Transpose", "LogSoftmax", "Transpose")),
                          Case("over the last axis", softmax(3), False),
                          # before opset 13, axis=1 is a softmax over the flattened axes 1..3: another op
                          Case("opset 12", softmax(1, opset=12), False),
                          Case("a backend whose Softmax is fast on inner axes", softmax(1), False, backend=CpuWithoutSlowOps)],
    "fused-matmul": [Case("MatMul(Transpose(a), b)", transposed_matmul([1, 0]), True, ("FusedMatMul",)),
                     Case("Transpose of the batch axes", transposed_matmul([1, 0, 2]), False)],
    "residual-2d": [Case("LayerNorm(x W + b + skip) on [2, 5, 16]", residual([2, 5, 16]), True,
                         ("Reshape", "Gemm", "Reshape", "Add", "LayerNormalization", "Reshape")),
                    Case("the skip broadcasts ([1, 5, 16])", residual([1, 5, 16]), False),
                    Case("a backend whose SkipLayerNormalization is fast", residual([2, 5, 16]), False, backend=CpuWithoutSlowOps)],
    "convtranspose-depth-to-space": [
        Case("one output channel, kernel = stride = 2, bias", conv_transpose(1, 2, 2), True, ("Conv", "DepthToSpace"),
             backend=CpuWithSlowOneChannelConvTranspose),
        Case("kernel = stride = 3, no bias", conv_transpose(1, 3, 3, bias=False), True, ("Conv", "DepthToSpace"),
             backend=CpuWithSlowOneChannelConvTranspose),
        Case("four output channels", conv_transpose(4, 2, 2), False, reason="output channels",
             backend=CpuWithSlowOneChannelConvTranspose),
        Case("kernel 3, stride 2: blocks overlap", conv_transpose(1, 3, 2), False, reason="not one square block",
             backend=CpuWithSlowOneChannelConvTranspose),
        Case("a backend whose ConvTranspose is not slow", conv_transpose(1, 2, 2), False)],
}

PARAMS = [pytest.param(rule, case, id=f"{rule}: {case.label}") for rule, cases in CASES.items() for case in cases]


def test_every_rule_has_cases():
    """Each catalogue rule has a positive and a negative case here, and no case names a rule that is gone."""
    assert set(CASES) == set(RULES)
    for rule, cases in CASES.items():
        assert any(c.fires for c in cases) and any(not c.fires for c in cases), rule


@pytest.mark.parametrize("rule,case", PARAMS)
def test_rule_case(rule: str, case: Case):
    model = case.build()
    before = [n.op_type for n in model.graph.node]
    backend = case.backend if isinstance(case.backend, str) else case.backend()
    only = [rule, "matmul-add", "reshape", "noop"] if rule == "residual-2d" else [rule]  # it leaves them work to finish
    fused = run_fuse(model, _feeds(model, case.scale), backend=backend, only=only)
    fired = fused.result.counts.get(rule, 0)
    if case.fires:
        assert fired >= 1, fused.notes
        if case.ops_after is not None:
            assert tuple(fused.ops) == case.ops_after
        if case.makes is not None:
            assert case.makes in fused.ops
        assert fused.max_error <= case.atol
    else:
        assert fired == 0 and fused.ops == before
        assert fused.max_error == 0
        if case.reason is not None:
            assert f"rule '{rule}' matched" in fused.notes and case.reason in fused.notes, fused.notes
