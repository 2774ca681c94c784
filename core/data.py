"""Calibration and evaluation feeds: loading, checking against the model, splitting.

A Dataset holds, per model input, an array whose first axis is the sample axis;
``dataset.feeds()[i]`` is what one ``session.run`` receives. Sources: an .npz (keys are
input names), a folder of .npz/.npy files, a folder of images with preprocessing, or
random data shaped from the model's inputs (flagged, since its accuracy numbers do not
describe real data). A sequence input (``seq(tensor)``, or an optional one) is held as an
array with one more axis, the sequence's, and fed as a list of its elements. Mismatched
names, shapes or dtypes, and NaN or Inf in a float input, are a DataError naming the input
(and the sample).
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxsmith.errors import DataError, first_line
from onnxsmith.target import physical_memory_bytes

__all__ = [
    "Dataset",
    "ImageOptions",
    "InputSpec",
    "load_dataset",
    "model_inputs",
    "random_dataset",
    "split_dataset",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass(frozen=True)
class InputSpec:
    """A graph input: name, numpy dtype, and dims (int, or a str/None for a dynamic dim)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]  # a sequence input: (SEQUENCE_AXIS, *the element's dims)
    sequence: bool = False

    def describe(self) -> str:
        dims = "x".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{self.name} [{dims}] {self.dtype}" + (" (a sequence along its first axis)" if self.sequence else "")


SEQUENCE_AXIS = "sequence length"  # the dynamic dim a sequence input's arrays carry first


def model_inputs(model: ir.Model) -> list[InputSpec]:
    specs = []
    for value in model.graph.inputs:
        if value.name in model.graph.initializers:
            continue
        type_ = value.type
        while isinstance(type_, ir.OptionalType):  # a present optional: fed as its element
            type_ = type_.elem_type
        sequence = isinstance(type_, ir.SequenceType)
        dtype = np.dtype(value.dtype.numpy()) if value.dtype is not None else np.dtype(np.float32)
        dims: tuple[int | str | None, ...] = ()
        if value.shape is not None:
            dims = tuple(d if isinstance(d, int) else (d.value if d.value else None) for d in value.shape)
        specs.append(InputSpec(value.name, dtype, (SEQUENCE_AXIS, *dims) if sequence else dims, sequence))
    return specs


@dataclass
class Dataset:
    """Per input, an array of samples (axis 0); each sample keeps the model's batch dim."""

    arrays: dict[str, np.ndarray]
    source: str
    random: bool = False
    notes: list[str] = field(default_factory=list)
    positions: list[int] | None = None  # each sample's index in the source; None: its own index
    sequences: frozenset[str] = frozenset()  # inputs fed as a list of their first axis's elements
    samples: int = 1  # the count when there are no arrays (a model without inputs runs once per sample)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else self.samples

    def feeds(self) -> list[dict[str, np.ndarray]]:
        # np.asarray: a scalar input's sample must stay a 0-d array (arr[i] of a 1-D array is a numpy scalar, which ORT refuses)
        return [{name: [np.asarray(e) for e in arr[i]] if name in self.sequences else np.asarray(arr[i])
                 for name, arr in self.arrays.items()} for i in range(len(self))]

    def take(self, indices: np.ndarray | list[int]) -> Dataset:
        positions = [self.position(int(i)) for i in indices]
        return Dataset({k: v[indices] for k, v in self.arrays.items()}, self.source, self.random, list(self.notes), positions,
                       self.sequences, len(indices))

    def position(self, index: int) -> int:
        """Where sample ``index`` sits in the source (a split keeps the source's numbering)."""
        return self.positions[index] if self.positions is not None else index

    def describe_sample(self, index: int) -> str:
        return f"sample {self.position(index)} of {self.source} (counting from 0)"

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "samples": len(self), "random": self.random, "notes": self.notes}


@dataclass(frozen=True)
class ImageOptions:
    """How to turn image files into a model input (pixels are scaled to 0..1 first)."""

    size: tuple[int, int] | None = None  # (height, width); default: the model input's static dims
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: Literal["NCHW", "NHWC"] | None = None  # default: guessed from where the 3 channels sit
    color: Literal["RGB", "BGR"] = "RGB"


def load_dataset(
    source: str | Path,
    inputs: list[InputSpec],
    *,
    samples: int | None = None,
    images: ImageOptions | None = None,
) -> Dataset:
    """Load data from a path and check it against the model's inputs."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"calibration data not found: {path}", "pass an .npz, a folder of .npz/.npy files or images, or 'random'")
    if not path.is_file() and not path.is_dir():  # a FIFO or a device: a read would block or never end
        raise DataError(f"calibration data {path} is neither a regular file nor a folder", "pass an .npz or a folder of .npz/.npy files or images")
    if path.is_file():
        if path.suffix != ".npz":
            raise DataError(f"calibration file {path.name} is not an .npz", "save arrays with numpy.savez(path, input_name=array)")
        arrays = _read_npz(path)
    else:
        arrays = _read_folder(path, inputs, images or ImageOptions())
    return _conform(arrays, inputs, str(path), samples)


def random_dataset(
    inputs: list[InputSpec],
    *,
    samples: int = 4,
    shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> Dataset:
    """Random feeds shaped from the model's inputs; dynamic dims are 1 unless ``shapes`` gives them.

    Floats are standard normal; integers are 1 and booleans True, values that are valid
    token ids, masks and indices in most models.
    """
    shapes = shapes or {}
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in inputs:
        shape = shapes.get(spec.name) or tuple(d if isinstance(d, int) else 1 for d in spec.shape)
        if len(shape) != len(spec.shape):
            raise DataError(
                f"input shape for '{spec.name}' has {len(shape)} dims but the model input has {len(spec.shape)}",
                f"give all dims, e.g. {spec.name}={'x'.join('1' for _ in spec.shape)}",
            )
        refuse_beyond_memory(float(np.prod((samples, *shape), dtype=np.float64)) * max(spec.dtype.itemsize, 8),
                             f"random inputs of shape {'x'.join(map(str, shape))} for '{spec.name}' need",
                             "give a smaller --input-shape")
        if spec.dtype.kind == "f":
            arr = rng.standard_normal((samples, *shape)).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            arr = np.ones((samples, *shape), dtype=bool)
        else:
            arr = np.ones((samples, *shape), dtype=spec.dtype)
        arrays[spec.name] = arr
    return Dataset(arrays, "random", random=True, notes=["random data: accuracy numbers do not describe real inputs"],
                   sequences=_sequences(inputs), samples=samples)


def split_dataset(dataset: Dataset, *, eval_samples: int | None = None, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split into (calibration, held-out evaluation); a quarter is held out by default."""
    n = len(dataset)
    if n == 1:
        note = "only one sample: calibration and evaluation use the same sample"
        return dataset, dataclasses.replace(dataset, notes=[*dataset.notes, note])
    k = eval_samples if eval_samples is not None else max(1, n // 4)
    if not 1 <= k < n:
        raise DataError(f"cannot hold out {k} of {n} samples for evaluation", f"choose eval_samples between 1 and {n - 1}")
    order = np.random.default_rng(seed).permutation(n)
    return dataset.take(np.sort(order[k:])), dataset.take(np.sort(order[:k]))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        _refuse_oversized(path)
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path}: {e}", "write it with numpy.savez (object arrays are refused)") from e


def _refuse_oversized(path: Path) -> None:
    """Read only the arrays' headers and refuse a file whose arrays would take more than half of
    this machine's memory: a header may declare any shape, and a compressed member may
    inflate to it, so the size is checked before anything is allocated."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            with archive.open(member) as f:
                total += _declared_bytes(f)
    refuse_beyond_memory(total, f"{path.name} declares", "give fewer or smaller samples (--calib-samples takes a subset)")


def _declared_bytes(f) -> float:
    """The bytes an .npy stream's header declares (its shape times its item size)."""
    major, _ = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    return float(np.prod(shape, dtype=np.float64)) * dtype.itemsize


def _read_npy(path: Path) -> np.ndarray:
    """One .npy file of a folder, as _read_npz reads an .npz: size checked from its header, no pickles."""
    try:
        with open(path, "rb") as f:
            declared = _declared_bytes(f)
        refuse_beyond_memory(declared, f"{path.name} declares", "give fewer or smaller samples (--calib-samples takes a subset)")
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"cannot read {path}: {first_line(e)}", "write it with numpy.save (object arrays are refused)") from None


def _concatenate(name: str, parts: list[tuple[Path, np.ndarray]]) -> np.ndarray:
    """The samples of a folder's files for one input, one after another; files whose samples
    differ in shape or dtype are named instead of failing inside numpy."""
    first_path, first = parts[0]
    for path, arr in parts[1:]:
        if arr.ndim == 0 or first.ndim == 0 or arr.shape[1:] != first.shape[1:] or arr.dtype != first.dtype:
            raise DataError(f"'{name}' in {path.name} is {arr.dtype} {list(arr.shape)} but in {first_path.name} "
                            f"{first.dtype} {list(first.shape)}: samples must differ only in their first dim",
                            "give every file samples of one shape and dtype")
    return np.concatenate([arr for _, arr in parts])


def refuse_beyond_memory(nbytes: float, what: str, fix: str) -> None:
    """A DataError when ``nbytes`` (about to be allocated) exceed half of this machine's memory:
    sizes from a file's header or from the command line are checked before numpy allocates."""
    limit = physical_memory_bytes() // 2
    if nbytes > limit:
        raise DataError(f"{what} {nbytes / 2**30:.1f} GiB of arrays, more than half of this machine's "
                        f"{2 * limit / 2**30:.1f} GiB memory", fix)


def _read_folder(folder: Path, inputs: list[InputSpec], images: ImageOptions) -> dict[str, np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    npz = [p for p in files if p.suffix == ".npz"]
    npy = [p for p in files if p.suffix == ".npy"]
    pictures = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if npz:
        parts = [_read_npz(p) for p in npz]
        keys = set(parts[0])
        for p, part in zip(npz, parts, strict=True):
            if set(part) != keys:
                raise DataError(f"{p.name} has keys {sorted(part)} but {npz[0].name} has {sorted(keys)}", "give every file the same input names")
        return {k: _concatenate(k, [(p, part[k]) for p, part in zip(npz, parts, strict=True)]) for k in sorted(keys)}
    if npy or pictures:
        if len(inputs) != 1:
            kind = ".npy files" if npy else "images"
            raise DataError(f"a folder of {kind} can only feed a single-input model; this one has {len(inputs)} inputs", "use .npz files keyed by input name")
        if npy:
            return {inputs[0].name: _concatenate(inputs[0].name, [(p, _read_npy(p)) for p in npy])}
        return {inputs[0].name: _read_images(pictures, inputs[0], images)}
    raise DataError(f"no .npz, .npy or image files in {folder}", "put calibration samples in the folder")


def _read_images(paths: list[Path], spec: InputSpec, options: ImageOptions) -> np.ndarray:
    from PIL import Image  # imported only for image folders

    if len(spec.shape) != 4:
        raise DataError(f"input '{spec.name}' has {len(spec.shape)} dims, images need 4 (NCHW or NHWC)", "pass .npz data instead")
    layout = options.layout or ("NHWC" if spec.shape[3] == 3 and spec.shape[1] != 3 else "NCHW")
    hw = spec.shape[2:4] if layout == "NCHW" else spec.shape[1:3]
    size = options.size or (tuple(hw) if all(isinstance(d, int) for d in hw) else None)
    if size is None:
        raise DataError(f"input '{spec.name}' has dynamic height/width, so the image size is unknown", "give it, e.g. --image-size 224x224")
    refuse_beyond_memory(float(len(paths)) * size[0] * size[1] * 3 * 4, f"{len(paths)} images at {size[0]}x{size[1]} need",
                         "give a smaller --image-size")
    mean, std = np.asarray(options.mean, np.float32), np.asarray(options.std, np.float32)
    batch = []
    for p in paths:
        try:
            with Image.open(p) as img:
                rgb = img.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # truncated, not an image, or a bomb
            raise DataError(f"cannot read image {p.name}: {first_line(e)}", "remove it or replace it with a valid image") from None
        pixels = np.asarray(rgb, dtype=np.float32) / 255.0
        if options.color == "BGR":
            pixels = pixels[..., ::-1]
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero std: _check_finite names the sample
            pixels = (pixels - mean) / std
        batch.append(pixels.transpose(2, 0, 1) if layout == "NCHW" else pixels)
    return np.stack(batch).astype(spec.dtype)


def _conform(arrays: dict[str, np.ndarray], inputs: list[InputSpec], source: str, samples: int | None) -> Dataset:
    """Check names, ranks, static dims and dtypes; give each sample the model's batch dim."""
    expected = {s.name for s in inputs}
    if set(arrays) != expected:
        missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        raise DataError(
            f"calibration data names {sorted(arrays)} do not match the model inputs {sorted(expected)}"
            + (f" (missing {missing})" if missing else "") + (f" (unexpected {extra})" if extra else ""),
            "key the arrays by the model's input names (see `onnxsmith inspect MODEL`)",
        )
    conformed = {}
    for spec in inputs:
        arr = arrays[spec.name]
        if arr.ndim == len(spec.shape):  # the first axis is both sample and batch
            arr = arr[:, None]
        if arr.ndim != len(spec.shape) + 1:
            raise DataError(
                f"calibration array '{spec.name}' has shape {arr.shape}, not samples of {spec.describe()}",
                "stack samples along a new first axis, or along the batch axis",
            )
        for axis, (have, want) in enumerate(zip(arr.shape[1:], spec.shape, strict=True)):
            if isinstance(want, int) and have != want:
                raise DataError(
                    f"calibration array '{spec.name}' has size {have} on axis {axis}, the model expects {spec.describe()}",
                    "resize the data to the model's input shape",
                )
        if arr.dtype != spec.dtype:
            if _kind(arr.dtype) != _kind(spec.dtype):
                raise DataError(f"calibration array '{spec.name}' is {arr.dtype}, the model expects {spec.dtype}", f"save it as {spec.dtype}")
            with np.errstate(over="ignore"):  # an overflow to Inf is refused just below, naming the sample
                arr = arr.astype(spec.dtype)
        conformed[spec.name] = arr[:samples] if samples else arr
        _check_finite(spec.name, conformed[spec.name], source)
    counts = {name: len(a) for name, a in conformed.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"inputs have different sample counts {counts}", "give every input the same number of samples")
    return Dataset(conformed, source, sequences=_sequences(inputs))


def _sequences(inputs: list[InputSpec]) -> frozenset[str]:
    return frozenset(spec.name for spec in inputs if spec.sequence)


def _check_finite(name: str, arr: np.ndarray, source: str) -> None:
    """Refuse NaN and Inf in a float input: calibration ranges and the reference outputs built
    from them would be NaN, and a NaN output cannot be compared with anything."""
    if arr.dtype.kind not in "fc" or np.isfinite(arr).all():
        return
    finite = np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    index = int(np.argmin(finite))
    value = "NaN" if np.isnan(arr[index]).any() else "Inf"
    raise DataError(
        f"input '{name}' holds {value} in sample {index} of {source} (counting from 0)",
        "replace non-finite values (e.g. numpy.nan_to_num) or drop those samples",
    )


def _kind(dtype: np.dtype) -> str:
    return "f" if dtype.kind in "fc" else "b" if dtype.kind == "b" else "i"
