"""ONNX Runtime's accelerator execution providers: CUDA, TensorRT, DirectML, CoreML.

Each is only usable where its onnxruntime build and hardware are (onnxruntime-gpu and an
NVIDIA GPU; onnxruntime-directml on Windows; macOS for CoreML); ``available()`` says which
is missing. Nodes a provider cannot take fall back to the next provider in the list, as
ONNX Runtime assigns them, and show up in a profile under that provider.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from onnxsmith.backend import Capabilities, register_backend
from onnxsmith.backends.ort_base import OrtBackend, gpu_present

__all__ = ["OrtCoreMLBackend", "OrtCudaBackend", "OrtDmlBackend", "OrtTensorRTBackend"]

# What the NVIDIA EPs run in integer kernels from QDQ (TensorRT's explicit quantization;
# CUDA EP's QDQ-aware Conv/MatMul are few, so ORT runs the rest dequantized).
_TRT_INT8_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "Resize", "Transpose", "Reshape", "Slice", "Split", "Pad")


@register_backend
class OrtCudaBackend(OrtBackend):
    name = "cuda"
    description = "ONNX Runtime, CUDAExecutionProvider (NVIDIA GPU)"
    provider = "CUDAExecutionProvider"
    package = "onnxruntime-gpu (and the CUDA/cuDNN libraries it links)"
    fallbacks = ("CPUExecutionProvider",)

    def provider_options(self) -> dict[str, Any]:
        return {
            "device_id": 0,
            # Benchmark the cuDNN algorithms once per shape: slower session start, faster runs.
            "cudnn_conv_algo_search": "EXHAUSTIVE",
            "arena_extend_strategy": "kSameAsRequested",
            "do_copy_in_default_stream": True,
        }

    def requirement(self) -> str:
        return gpu_present()

    def declared_capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "fp16", "bf16"),
            quant_format="qdq",
            int8_ops=("Conv", "MatMul"),
            int8_activations="int8",
            notes=("fp16 halves time on tensor cores; int8 QDQ mostly runs dequantized on this provider: prefer tensorrt",),
        )


@register_backend
class OrtTensorRTBackend(OrtBackend):
    name = "tensorrt"
    description = "ONNX Runtime, TensorrtExecutionProvider (NVIDIA GPU, TensorRT engines)"
    provider = "TensorrtExecutionProvider"
    package = "onnxruntime-gpu and TensorRT (pip install tensorrt)"
    fallbacks = ("CUDAExecutionProvider", "CPUExecutionProvider")

    def provider_options(self) -> dict[str, Any]:
        cache = Path.home() / ".cache" / "onnxsmith" / "tensorrt"
        return {
            "device_id": 0,
            "trt_fp16_enable": True,
            "trt_int8_enable": False,  # explicit QDQ models are built as int8 without calibration tables
            "trt_sparsity_enable": True,  # 2:4 structured-sparse weights run on sparse tensor cores (Ampere+)
            "trt_builder_optimization_level": 3,
            "trt_engine_cache_enable": True,  # engines take minutes to build: reuse them across runs
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }

    def requirement(self) -> str:
        return gpu_present()

    def declared_capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "fp16", "int8"),
            quant_format="qdq",
            int8_ops=_TRT_INT8_OPS,
            int8_activations="int8",  # TensorRT's explicit quantization is symmetric int8
            gains_from_nm_sparsity=True,
            notes=("a profile shows each TensorRT engine as one layer: TensorRT fuses the subgraph it takes",),
        )


@register_backend
class OrtDmlBackend(OrtBackend):
    name = "dml"
    description = "ONNX Runtime, DmlExecutionProvider (DirectML, any DirectX 12 GPU on Windows)"
    provider = "DmlExecutionProvider"
    package = "onnxruntime-directml (Windows)"
    fallbacks = ("CPUExecutionProvider",)

    def provider_options(self) -> dict[str, Any]:
        return {"device_id": 0}

    def requirement(self) -> str:
        return "" if sys.platform == "win32" else "DirectML runs on Windows only"

    def declared_capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "fp16"),
            quant_format="qdq",
            int8_ops=("Conv", "MatMul", "Gemm"),
            int8_activations="uint8",
            notes=("ONNX Runtime runs DirectML sessions without memory patterns and sequentially (no parallel execution)",),
        )


@register_backend
class OrtCoreMLBackend(OrtBackend):
    name = "coreml"
    description = "ONNX Runtime, CoreMLExecutionProvider (Apple Neural Engine / GPU on macOS)"
    provider = "CoreMLExecutionProvider"
    package = "onnxruntime on macOS (the CoreML provider is part of its macOS wheels)"
    fallbacks = ("CPUExecutionProvider",)

    def provider_options(self) -> dict[str, Any]:
        return {"ModelFormat": "MLProgram", "MLComputeUnits": "ALL", "RequireStaticInputShapes": "0"}

    def requirement(self) -> str:
        return "" if sys.platform == "darwin" else "CoreML runs on macOS only"

    def declared_capabilities(self) -> Capabilities:
        return Capabilities(
            precisions=("fp32", "fp16"),
            quant_format="qdq",
            int8_ops=("Conv", "MatMul", "Gemm"),
            int8_activations="int8",
            notes=("the Neural Engine computes in fp16; int8 weights save size, activations stay fp16",),
        )
