"""Every rule of the ``fuse`` family: its name, what it does, and when it may run.

A ``FuseRule`` bundles rewrite rules (onnxscript's where they do the job, ours in
rules_neutral / rules_ort where they fall short) under one user-facing name, the name
``fuse{disable=...}`` and the report use. ``needs_ops`` lists the ops the target
backend must have kernels for (asked through ``Capabilities.ops``, never hard-coded
per backend); ``min_opset`` the ai.onnx opset a standard-op replacement needs;
``makes`` the ops a rule creates (it does not run where the backend says one of them is
slower than what it replaces, ``Capabilities.slow_ops``); ``avoids`` the slow ops a rule
exists to keep away (it runs only where the backend says they are slow).
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxscript.rewriter import RewriteRule, RewriteRuleSet
from onnxscript.rewriter.ort_fusions import (
    attention,
    bias_gelu,
    erfgelu,
    fused_matmul_rule_sets,
    gelu,
    mha,
    rms_normalization,
    rotary_embedding,
    sdpa,
    skip_normalization,
)
from onnxscript.rewriter.rules import common as oss
# Private: onnxscript (0.5 to 0.7) exports no name for its LayerNormalization fusion rules;
# pinned below the next minor version in pyproject.toml for this import.
from onnxscript.rewriter.rules.fusion import _layer_norm

from onnxsmith.passes.fuse import rules_flatten, rules_layernorm, rules_neutral, rules_ort

__all__ = ["BACKEND_RULES", "NEUTRAL_RULES", "RULES", "TRANSFORMER_RULES", "FuseRule"]


@dataclass(frozen=True)
class FuseRule:
    name: str
    doc: str
    rules: tuple[RewriteRule, ...]
    needs_ops: tuple[str, ...] = ()
    min_opset: int = 0
    makes: tuple[str, ...] = ()
    avoids: tuple[str, ...] = ()
    explain: bool = True  # False where "matched but refused" is the normal case (every non-trivial Cast...)


def _rules(*items) -> tuple[RewriteRule, ...]:
    """Flatten rules, lists of rules and rule sets into one tuple."""
    flat: list[RewriteRule] = []
    for item in items:
        if isinstance(item, RewriteRule):
            flat.append(item)
        elif isinstance(item, RewriteRuleSet):
            flat.extend(item.rules)
        else:
            flat.extend(_rules(*item))
    return tuple(flat)


# Backend-neutral: standard ONNX ops in, standard ONNX ops out.
NEUTRAL_RULES: tuple[FuseRule, ...] = (
    FuseRule("noop", "remove x+0, x*1, x-0, x/1, Dropout, Cast/Expand/Transpose/Reshape to the same, Pad of zeros",
             _rules(oss.mul_by_1_rule.commute(), oss.add_0_rule.commute(), oss.sub_0_rule, oss.div_by_1_rule,
                    oss.dropout_zero_rule, oss.dropout_inference_rule, oss.no_op_cast_rule, oss.no_op_expand_rule,
                    oss.no_op_transpose_rule, oss.cast_cast_rule, rules_neutral.pad_zero_rule,
                    rules_neutral.reshape_same_shape_rule), explain=False),
    FuseRule("transpose", "merge consecutive Transposes (and drop pairs that cancel)", (oss.transpose_transpose_rule,)),
    FuseRule("reshape", "merge consecutive Reshapes; 1-D Squeeze+Reshape",
             (oss.reshape_reshape_rule, oss.squeeze_reshape_1d_rule, rules_flatten.reshape_of_reshape_rule)),
    FuseRule("squeeze-unsqueeze", "merge Unsqueezes; drop Squeeze/Unsqueeze pairs that cancel",
             (oss.unsqueeze_unsqueeze_rule, *rules_neutral.squeeze_unsqueeze_rules)),
    # Not onnxscript's slice_split_rule (two Slices -> Split): it matches only the two halves
    # of the last axis, only in one node order, and ORT CPU runs Split slowly (slow_ops).
    FuseRule("slices", "collapse Slices that take everything", (oss.collapse_slice_rule, oss.collapse_slice2_rule), explain=False),
    FuseRule("batchnorm", "fold BatchNormalization into the preceding Conv, ConvTranspose or Gemm",
             (oss.fuse_batchnorm_into_conv_rule, oss.fuse_batchnorm_into_conv_transpose_rule, oss.fuse_batchnorm_into_gemm_rule)),
    FuseRule("conv-affine", "fold a per-channel constant Mul/Add around a Conv into its weights and bias",
             # commuted: Paddle writes Mul(scale, x) (PP-LCNetV3's learnable affine after HardSwish)
             _rules(oss.affine_conv_fusion_rule.commute(), oss.conv_affine_fusion_rule.commute(), rules_neutral.conv_affine_rules)),
    FuseRule("gemm-affine", "fold a constant per-column Mul/Add after a Gemm into its weights and bias",
             _rules(rules_neutral.gemm_affine_rules)),
    FuseRule("pad-conv", "fold a constant zero Pad into the following Conv's pads",
             (oss.normalize_pad_format_conv_rule, oss.fuse_pad_into_conv_rule), explain=False),
    FuseRule("matmul-add", "MatMul + Add into Gemm where both inputs are 2-D (also when the output is flattened to 2-D)",
             _rules(oss.matmul_add_to_gemm_rule, oss.transpose_a_matmul_add_to_gemm_rule,
                    oss.transpose_b_matmul_add_to_gemm_rule, oss.transpose_ab_matmul_add_to_gemm_rule,
                    rules_flatten.flattened_linear_rules)),
    FuseRule("clip", "merge Min/Max into Clip and consecutive Relu/Clip",
             (oss.min_max_rule, oss.max_min_rule, oss.max_max_rule, oss.min_min_rule, oss.successive_relu_rule,
              oss.successive_clip_rule, oss.successive_clip_relu_rule, oss.successive_relu_clip_rule)),
    FuseRule("hardswish", "HardSigmoid/Relu6 arithmetic into HardSigmoid and HardSwish", _rules(oss.fuse_hardswish_rules()), min_opset=14),
    FuseRule("expand", "drop an Expand that the following elementwise op broadcasts anyway", _rules(oss.expand_before_binary_op_rules), explain=False),
    FuseRule("optional-bias", "drop all-zero Conv/Gemm biases",
             (oss.remove_optional_bias_from_conv_rule, oss.remove_optional_bias_from_conv_transpose_rule, oss.remove_optional_bias_from_gemm_rule), explain=False),
    FuseRule("layernorm", "ReduceMean/Sub/Pow/Sqrt/Div arithmetic into LayerNormalization",
             _rules(_layer_norm.layer_normalization_rules[0], rules_layernorm.layer_norm_axes_attribute_rule,
                    _layer_norm.layer_normalization_rules[1]), needs_ops=("LayerNormalization",), min_opset=17),
)

# Transformer blocks into ONNX Runtime contrib ops, in the order onnxscript's
# ort_fusions.fuse_xformers applies them (later fusions consume earlier ones).
TRANSFORMER_RULES: tuple[FuseRule, ...] = (
    FuseRule("gelu", "erf/tanh GELU arithmetic into Gelu / FastGelu", _rules(erfgelu.rules, gelu.gelu_rules), needs_ops=("Gelu", "FastGelu")),
    FuseRule("rms-norm", "RMS normalization into SimplifiedLayerNormalization",
             _rules(rms_normalization.rms_normalization_ruleset), needs_ops=("SimplifiedLayerNormalization",)),
    FuseRule("skip-layernorm", "residual Add + LayerNormalization into SkipLayerNormalization",
             _rules(skip_normalization.skip_layer_normalization_ruleset, skip_normalization.skip_rms_normalization_ruleset),
             needs_ops=("SkipLayerNormalization",), makes=("SkipLayerNormalization",)),
    FuseRule("rotary", "rotary position embedding into RotaryEmbedding",
             _rules(rotary_embedding.rotary_embedding_rules, rotary_embedding.partial_embedding_rules), needs_ops=("RotaryEmbedding",)),
    FuseRule("attention", "scaled dot-product attention (masks included) into MultiHeadAttention / Attention",
             _rules(sdpa.sdpa_rules, mha.mha_rules_no_past, mha.mha_rules_with_past, attention.attention_rules),
             needs_ops=("MultiHeadAttention",)),
    FuseRule("bias-gelu", "Add + Gelu into BiasGelu", _rules(bias_gelu.bias_gelu_rules), needs_ops=("BiasGelu",)),
)

# Other backend kernels, applied after the neutral rules have settled.
BACKEND_RULES: tuple[FuseRule, ...] = (
    FuseRule("conv-activation", "Conv + Relu/LeakyRelu/Tanh/Sigmoid/HardSigmoid/Clip into FusedConv",
             _rules(rules_ort.conv_activation_rules), needs_ops=("FusedConv",)),
    FuseRule("silu", "x * Sigmoid(x) (SiLU) into QuickGelu(alpha=1)", _rules(rules_ort.silu_rules), needs_ops=("QuickGelu",)),
    FuseRule("fused-matmul", "Transpose and scalar Mul into FusedMatMul",
             _rules(fused_matmul_rule_sets.fused_matmul_rule_sets()), needs_ops=("FusedMatMul",)),
    FuseRule("softmax-last-axis", "Softmax/LogSoftmax over an inner axis computed over the last axis between two "
             "Transposes, where the backend's kernel is slow off the last axis",
             _rules(rules_ort.softmax_last_axis_rules), min_opset=13, avoids=("Softmax:inner-axis",),
             explain=False),
    FuseRule("residual-2d", "residual Add + LayerNormalization of 3-D tensors computed on their 2-D view, "
             "where the backend's SkipLayerNormalization (which its runtime would form) is slow",
             (rules_flatten.residual_layernorm_2d_rule,), min_opset=17, avoids=("SkipLayerNormalization",), explain=False),
    FuseRule("convtranspose-depth-to-space", "a ConvTranspose of one output channel with kernel = stride as a 1x1 Conv "
             "and DepthToSpace, where the backend's ConvTranspose of one output channel is slow",
             (rules_neutral.conv_transpose_depth_to_space_rule,), min_opset=11,
             avoids=("ConvTranspose:one-output-channel",)),
)

RULES: dict[str, FuseRule] = {r.name: r for r in (*NEUTRAL_RULES, *TRANSFORMER_RULES, *BACKEND_RULES)}
