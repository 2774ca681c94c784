"""A model above 2 GB through cleanup and fuse within 2.5x its size in memory (issue 18).

Peak memory, not time: the kernel's count of the process's resident pages (os.wait4). The
measured peak here is about 1.1x (docs/benchmarks.md "## models above 2 GB"); before the
reference sessions read the weights in place it was 2.6x. About 20 s, 2.1 GB of disk."""

from __future__ import annotations

import shutil
import sys

import onnx
import pytest

from large_models import peak_rss_of, write_large_model

GIB = 2.05


def test_cleanup_and_fuse_of_a_model_above_2_gb_stay_within_2_5x_its_size(tmp_path):
    if shutil.disk_usage(tmp_path).free < 6 * 2**30:
        pytest.skip("needs 6 GiB of free disk for the model and its artifact")
    model = write_large_model(tmp_path, GIB)
    size_mib = sum(f.stat().st_size for f in tmp_path.glob("large.onnx*")) / 2**20
    out = tmp_path / "out" / "large.onnx"
    out.parent.mkdir()
    code, peak_mib, _, stderr = peak_rss_of([
        sys.executable, "-m", "onnxsmith", "optimize", str(model), "-o", str(out), "--passes", "cleanup,fuse",
        "--calib", str(tmp_path / "large.npz"), "--latency-rounds", "0", "--profile-runs", "0"])
    assert code == 0, stderr
    assert peak_mib <= 2.5 * size_mib, f"peak RSS {peak_mib:.0f} MiB for a {size_mib:.0f} MiB model"
    written = onnx.load(str(out), load_external_data=False)
    assert [n.op_type for n in written.graph.node] == ["MatMul", "Relu", "MatMul"]
    assert sum(f.stat().st_size for f in out.parent.iterdir()) >= 0.99 * size_mib * 2**20  # every weight written
