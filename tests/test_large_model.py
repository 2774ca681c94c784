"""A model above 2 GB through cleanup, fuse, fp16 and int8 within 2.5x its size in memory (issue 18).

Peak memory, not time: the kernel's count of the process's resident pages (os.wait4). The
measured peaks here are about 1.1x for cleanup and fuse, 2.1x for fp16 and 2.3x for int8
(docs/benchmarks.md "## models above 2 GB"); before the reference sessions read the weights
in place they were 2.6x, 3.8x for fp16 before its checking session did too, and 3.5x for int8
before its kernel check read a profiled run and its sessions stopped holding our mapped
weights. About 100 s, 3.2 GB of disk."""

from __future__ import annotations

import shutil
import sys

import onnx
import pytest

from large_models import peak_rss_of, write_large_model

GIB = 2.05


@pytest.fixture(scope="module")
def large_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("large")
    if shutil.disk_usage(folder).free < 6 * 2**30:
        pytest.skip("needs 6 GiB of free disk for the model and its artifact")
    return write_large_model(folder, GIB)


@pytest.mark.parametrize(("passes", "ops", "weight_bytes"), [
    ("cleanup,fuse", ["MatMul", "Relu", "MatMul"], 4),
    ("cleanup,fuse,quantize{mode=fp16}", ["Cast", "MatMul", "Relu", "Cast", "MatMul"], 2),  # fp16 weights, float MatMuls on CPU
    # int8: timed per layer, guarded, checked end to end; what it keeps depends on ONNX Runtime's
    # kernels (1.32 leaves this MatMul float after DequantizeLinear, and the float model comes back)
    ("cleanup,fuse,quantize{mode=int8}", None, None),
])
def test_a_model_above_2_gb_stays_within_2_5x_its_size(large_model, passes, ops, weight_bytes, tmp_path):
    size_mib = sum(f.stat().st_size for f in large_model.parent.glob("large.onnx*")) / 2**20
    out = tmp_path / "large.onnx"
    code, peak_mib, _, stderr = peak_rss_of([
        sys.executable, "-m", "onnxsmith", "optimize", str(large_model), "-o", str(out), "--passes", passes,
        "--calib", str(large_model.parent / "large.npz"), "--latency-rounds", "0", "--profile-runs", "0"])
    assert code == 0, stderr
    assert peak_mib <= 2.5 * size_mib, f"peak RSS {peak_mib:.0f} MiB for a {size_mib:.0f} MiB model"
    written = onnx.load(str(out), load_external_data=False)
    if ops is None:  # a valid artifact, whatever int8 kept
        assert "Relu" in {n.op_type for n in written.graph.node}
        return
    assert [n.op_type for n in written.graph.node] == ops
    data = sum(f.stat().st_size for f in tmp_path.glob("large.onnx*")) / 2**20
    assert data >= 0.99 * size_mib * weight_bytes / 4  # every weight written, in its new type
