"""Calibration data: the sources, their checks against the model, and the held-out split."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from PIL import Image

from conftest import FIXTURES, run_cli
from onnxsmith.data import Dataset, ImageOptions, InputSpec, load_dataset, model_inputs, random_dataset, split_dataset
from onnxsmith.errors import DataError


@pytest.fixture(scope="module")
def cnn_inputs():
    return model_inputs(ir.load(FIXTURES / "cnn.onnx"))


def test_npz_samples_keep_the_batch_dim(cnn_inputs):
    data = load_dataset(FIXTURES / "cnn.npz", cnn_inputs, samples=10)
    assert len(data) == 10
    assert data.feeds()[0]["input"].shape == (1, 3, 32, 32)


def test_folder_of_npz_is_concatenated_and_float64_is_cast(tmp_path, cnn_inputs):
    for i in range(3):
        np.savez(tmp_path / f"{i}.npz", input=np.full((2, 3, 32, 32), i, np.float64))
    data = load_dataset(tmp_path, cnn_inputs)
    assert len(data) == 6 and data.arrays["input"].dtype == np.float32
    assert [float(f["input"].mean()) for f in data.feeds()] == [0, 0, 1, 1, 2, 2]


def test_folder_of_npy_for_a_single_input(tmp_path, cnn_inputs):
    np.save(tmp_path / "a.npy", np.ones((1, 3, 32, 32), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((2, 3, 32, 32), np.float32))
    assert len(load_dataset(tmp_path, cnn_inputs)) == 3


def test_image_folder_is_resized_normalised_and_laid_out(tmp_path, cnn_inputs):
    pixels = np.zeros((40, 50, 3), np.uint8)
    pixels[..., 0] = 255  # pure red
    for i in range(2):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    options = ImageOptions(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    data = load_dataset(tmp_path, cnn_inputs, images=options)
    x = data.feeds()[0]["input"]
    assert x.shape == (1, 3, 32, 32)  # size taken from the model's static dims, NCHW guessed
    np.testing.assert_allclose(x[0, :, 5, 5], [1.0, -1.0, -1.0], atol=1e-6)
    bgr = load_dataset(tmp_path, cnn_inputs, images=ImageOptions(color="BGR")).feeds()[0]["input"]
    np.testing.assert_allclose(bgr[0, :, 5, 5], [0.0, 0.0, 1.0], atol=1e-6)


def test_int_data_for_float_input_is_refused(tmp_path, cnn_inputs):
    np.savez(tmp_path / "c.npz", input=np.zeros((2, 3, 32, 32), np.int64))
    with pytest.raises(DataError, match="is int64, the model expects float32"):
        load_dataset(tmp_path / "c.npz", cnn_inputs)


def test_wrong_rank_is_refused(tmp_path, cnn_inputs):
    np.savez(tmp_path / "c.npz", input=np.zeros((2, 32, 32), np.float32))
    with pytest.raises(DataError, match="not samples of input"):
        load_dataset(tmp_path / "c.npz", cnn_inputs)


def test_multi_input_sample_counts_must_agree(tmp_path):
    inputs = model_inputs(ir.load(FIXTURES / "transformer.onnx"))
    np.savez(tmp_path / "t.npz", input_ids=np.ones((4, 8), np.int64), attention_mask=np.ones((3, 8), np.int64))
    with pytest.raises(DataError, match="different sample counts"):
        load_dataset(tmp_path / "t.npz", inputs)


def test_random_dataset_shapes_and_int_inputs():
    inputs = model_inputs(ir.load(FIXTURES / "transformer.onnx"))
    data = random_dataset(inputs, samples=3, shapes={"input_ids": (2, 5), "attention_mask": (2, 5)})
    feed = data.feeds()[0]
    assert feed["input_ids"].shape == (2, 5) and feed["input_ids"].dtype == np.int64
    assert data.random and "random" in data.notes[0]
    assert random_dataset(inputs, samples=1).feeds()[0]["attention_mask"].shape == (1, 1)


def test_split_holds_out_disjoint_samples(cnn_inputs):
    data = load_dataset(FIXTURES / "cnn.npz", cnn_inputs)
    calib, held_out = split_dataset(data, seed=0)
    assert (len(calib), len(held_out)) == (12, 4)
    calib_rows = {a.tobytes() for a in calib.arrays["input"]}
    assert not any(a.tobytes() in calib_rows for a in held_out.arrays["input"])
    assert split_dataset(data, seed=0)[1].arrays["input"].tobytes() == held_out.arrays["input"].tobytes()
    with pytest.raises(DataError, match="cannot hold out 16 of 16"):
        split_dataset(data, eval_samples=16)


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
def test_non_finite_values_are_refused_naming_input_and_sample(tmp_path, cnn_inputs, value, word):
    data = np.zeros((6, 3, 32, 32), np.float32)
    data[4, 0, 0, 0] = value
    np.savez(tmp_path / "c.npz", input=data)
    with pytest.raises(DataError, match=f"input 'input' holds {word} in sample 4 of .*c.npz"):
        load_dataset(tmp_path / "c.npz", cnn_inputs)
    assert len(load_dataset(tmp_path / "c.npz", cnn_inputs, samples=4)) == 4  # samples not used are not checked


def test_non_finite_values_in_npy_folders_and_images_are_refused(tmp_path, cnn_inputs):
    np.save(tmp_path / "a.npy", np.ones((2, 3, 32, 32), np.float32))
    np.save(tmp_path / "b.npy", np.full((1, 3, 32, 32), np.nan, np.float32))
    with pytest.raises(DataError, match="holds NaN in sample 2 of"):
        load_dataset(tmp_path, cnn_inputs)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(images / "white.png")
    with pytest.raises(DataError, match="holds Inf in sample 0 of"):  # a zero std divides by zero
        load_dataset(images, cnn_inputs, images=ImageOptions(std=(0.0, 1.0, 1.0)))
    float64_overflow = tmp_path / "big.npz"
    np.savez(float64_overflow, input=np.full((1, 3, 32, 32), 1e300))
    with pytest.raises(DataError, match="holds Inf in sample 0"):  # finite in float64, inf as the model's float32
        load_dataset(float64_overflow, cnn_inputs)


def test_split_samples_keep_their_numbering_in_the_source(cnn_inputs):
    data = load_dataset(FIXTURES / "cnn.npz", cnn_inputs)
    calibration, evaluation = split_dataset(data, eval_samples=4, seed=3)
    for part in (calibration, evaluation):
        for i in range(len(part)):
            position = part.position(i)
            np.testing.assert_array_equal(part.arrays["input"][i], data.arrays["input"][position])
            assert part.describe_sample(i).startswith(f"sample {position} of ")


def _scalar_input_model(path):
    """Clip(x, lo) with ``lo`` a 0-d (scalar) graph input, as Clip/CumSum/Range/If cond models have."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Clip", ["x", "lo"], ["c"], name="clip"), helper.make_node("Relu", ["c"], ["y"], name="relu")],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                    helper.make_tensor_value_info("lo", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def test_a_scalar_input_is_fed_as_a_0d_array_from_data_and_from_random_feeds(tmp_path):
    model = tmp_path / "s.onnx"
    _scalar_input_model(model)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s.npz", x=rng.standard_normal((8, 1, 4)).astype(np.float32), lo=(rng.standard_normal(8) * 0.1).astype(np.float32))
    dataset = Dataset({"lo": np.arange(3, dtype=np.float32)}, "t")
    assert all(isinstance(f["lo"], np.ndarray) and f["lo"].shape == () for f in dataset.feeds())
    for data in (["--calib", str(tmp_path / "s.npz")], []):  # a data file, and random feeds
        out = tmp_path / f"o{len(data)}.onnx"
        result = run_cli("optimize", str(model), "-o", str(out), "--passes", "cleanup,fuse", "--latency-rounds", "3", *data)
        assert result.code == 0, result.stderr
        assert out.exists()


def test_an_npz_declaring_more_than_memory_is_refused_before_anything_is_allocated(tmp_path):
    """A 300-byte file whose header declares 4 TB of float32: refused from the header alone."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(64))
    with pytest.raises(DataError, match=r"huge.npz declares 3725.3 GiB of arrays, more than half of this machine's"):
        load_dataset(path, [InputSpec("x", np.dtype("float32"), (None, 4))])


def test_sizes_from_the_command_line_are_checked_before_allocating(tmp_path):
    spec = [InputSpec("x", np.dtype("float32"), (None, None))]
    with pytest.raises(DataError, match=r"random inputs of shape 100000x100000000 for 'x' need .* GiB of arrays, more than half"):
        random_dataset(spec, shapes={"x": (100_000, 100_000_000)})
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    image_input = [InputSpec("x", np.dtype("float32"), (None, 3, None, None))]
    with pytest.raises(DataError, match=r"1 images at 200000x200000 need 447.0 GiB"):
        load_dataset(folder, image_input, images=ImageOptions(size=(200_000, 200_000)))


def test_a_file_that_is_not_an_image_in_an_image_folder_is_named(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (folder / "b.png").write_text("not a picture")
    with pytest.raises(DataError, match="cannot read image b.png"):
        load_dataset(folder, [InputSpec("x", np.dtype("float32"), (1, 3, 8, 8))])
