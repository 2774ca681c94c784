"""Transformer block fusions into ONNX Runtime contrib ops, via onnxscript's ort_fusions.

Follows ``onnxscript.rewriter.ort_fusions.fuse_xformers`` step by step, so that later
fusions consume the intermediate ops of earlier ones (SDPA -> MultiHeadAttention ->
Attention), but runs only the groups the user and the backend allow. Attention variants
the rules do not understand (other mask forms, extra ops between Softmax and MatMul) are
left alone: a rule fires only on a full match whose checks pass.
"""

from __future__ import annotations

from collections import Counter

import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript.rewriter import RewriteRuleSet
from onnxscript.rewriter.ort_fusions import shape_optimization
from onnxscript.rewriter.ort_fusions.attention import fuse_attention
from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
from onnxscript.rewriter.ort_fusions.cos_sin_cache import fuse_cos_sin_cache
from onnxscript.rewriter.ort_fusions.erfgelu import fuse_erfgelu
from onnxscript.rewriter.ort_fusions.gelu import fuse_gelu
from onnxscript.rewriter.ort_fusions.gqa import fuse_gqa
from onnxscript.rewriter.ort_fusions.gqa_packed_qkv import fuse_qkv_gqa
from onnxscript.rewriter.ort_fusions.mha import fuse_mha1, fuse_mha2
from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias
from onnxscript.rewriter.ort_fusions.mha_scale import fuse_mha_scale
from onnxscript.rewriter.ort_fusions.rms_normalization import fuse_rms_normalization
from onnxscript.rewriter.ort_fusions.rotary_embedding import fuse_partial_rotary_embedding, fuse_rotary_embedding
from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa
from onnxscript.rewriter.ort_fusions.sdpa_via_mha import replace_sdpa_by_mha
from onnxscript.rewriter.ort_fusions.skip_normalization import (
    fuse_skip_layer_normalization,
    fuse_skip_rms_normalization,
)

from onnxsmith.passes.fuse import rules_neutral
from onnxsmith.passes.fuse.rules_ort import drop_equal_qkv_sizes
from onnxsmith.passes.fuse.sweep import fold_and_sweep, fold_initializer_concats
from onnxsmith.shape_inference import infer_shapes

__all__ = ["fuse_transformer_blocks"]


def fuse_transformer_blocks(model: ir.Model, enabled: set[str]) -> Counter[str]:
    """Apply the enabled groups (names of catalogue.TRANSFORMER_RULES); return fires per group."""
    counts: Counter[str] = Counter()
    # The patterns need shapes and folded shape arithmetic (onnxscript's _pre_optimize).
    infer_shapes(model)
    fold_and_sweep(model)
    shape_optimization.rules.apply_to_model(model)
    fold_and_sweep(model)

    if "gelu" in enabled:
        counts["gelu"] += fuse_erfgelu(model)
    if "rms-norm" in enabled:
        counts["rms-norm"] += fuse_rms_normalization(model)
    if "skip-layernorm" in enabled:
        counts["skip-layernorm"] += fuse_skip_layer_normalization(model) + fuse_skip_rms_normalization(model)
    if "rotary" in enabled:
        counts["rotary"] += fuse_rotary_embedding(model) + fuse_cos_sin_cache(model)
        common_passes.CommonSubexpressionEliminationPass()(model)
        counts["rotary"] += fuse_partial_rotary_embedding(model)
    if "attention" in enabled:
        if RewriteRuleSet(rules_neutral.where_scalar_rules).apply_to_model(model):
            fold_and_sweep(model)
        counts["attention"] += fuse_sdpa(model)
        infer_shapes(model)  # the GQA/MHA patterns read the fused SDPA's shapes
        counts["attention"] += fuse_gqa(model) + fuse_qkv_gqa(model)
        mha = fuse_mha1(model) + fuse_mha2(model)
        counts["attention"] += mha + fuse_mha_scale(model)
        if mha:
            counts["attention"] += fuse_mha_bias(model) + fuse_attention(model)
            fold_initializer_concats(model)
            drop_equal_qkv_sizes(model)
        counts["attention"] += replace_sdpa_by_mha(model)
    if "gelu" in enabled:
        counts["gelu"] += fuse_gelu(model)
    if "bias-gelu" in enabled:
        counts["bias-gelu"] += fuse_bias_gelu(model)
    # Inline intermediate fusion functions no later fusion consumed; drop dead nodes.
    fold_and_sweep(model)
    return counts
