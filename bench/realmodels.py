"""Real ONNX models (and text-like inputs for them) for the ``realmodel`` tests.

The models are PaddleOCR's, as shipped inside the PyPI wheel ``rapidocr-onnxruntime==1.4.4``
(see DESIGN.md, "Real models for tests and benchmarks"). The wheel is fetched once with
``pip download`` and the needed ``.onnx`` file extracted; both are cached outside the
repository, in ``$ONNXSMITH_CACHE`` or ``~/.cache/onnxsmith/models``. Downloads and
extractions go to a temporary file that is renamed into place, so pytest processes running
at the same time never see a partial file. Every file is checked against a pinned sha256.

Inputs are rendered without network: dark text on a light background drawn with PIL's
default font, then preprocessed the way rapidocr 1.4.4 feeds each model (its
``config.yaml`` and ``ch_ppocr_{det,cls,rec}``): channels in BGR order, pixels scaled to
0..1, then ``(x - 0.5) / 0.5``, NCHW float32;

* det (DBNet, dynamic H/W): the image resized to H and W multiples of 32;
* cls (``cls_image_shape: [3, 48, 192]``): the text line resized to height 48 keeping its
  aspect ratio (width at most 192), zero-padded on the right to 192;
* rec (``rec_img_shape: [3, 48, 320]``): the same with width 320.

rapidocr resizes with OpenCV's bilinear ``cv2.resize``; we use PIL's bilinear resize (no
OpenCV here), which differs by a few grey levels on downscaled edges.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "MODELS",
    "RealModelUnavailable",
    "cache_dir",
    "det_input",
    "line_input",
    "real_image_batch",
    "real_model",
    "text_lines",
    "text_pages",
]

PACKAGE = "rapidocr-onnxruntime"
VERSION = "1.4.4"
WHEEL = "rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
WHEEL_SHA256 = "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"

# name -> (member of the wheel, sha256 of the file; the same as the wheel's RECORD)
MODELS: dict[str, tuple[str, str]] = {
    "ppocr_det": (
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    ),
    "ppocr_rec": (
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    ),
    "ppocr_cls": (
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    ),
}

# rapidocr's config.yaml: mean/std of every model, and the line models' input shapes.
MEAN = 0.5
STD = 0.5
CLS_SHAPE = (3, 48, 192)
REC_SHAPE = (3, 48, 320)

Kind = Literal["det", "cls", "rec"]

_WORDS = (
    "invoice total amount due date order number customer address street city phone "
    "email account balance payment received thank you for your business page section "
    "chapter report summary table figure model input output batch layer weight value "
    "optimize runtime latency memory quantize verify export graph node tensor shape"
).split()


class RealModelUnavailable(RuntimeError):
    """The real model could not be fetched (no network, no pip, a bad download)."""


def cache_dir() -> Path:
    """Where wheels and extracted models are kept: ``$ONNXSMITH_CACHE`` or ``~/.cache/onnxsmith/models``."""
    configured = os.environ.get("ONNXSMITH_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "onnxsmith" / "models"


def real_model(name: str) -> Path:
    """The path of the cached real model ``name`` ("ppocr_det", "ppocr_rec" or "ppocr_cls").

    Downloads the wheel and extracts the file on first use. Raises RealModelUnavailable
    (with the reason) when that is not possible, KeyError for an unknown name.
    """
    if name not in MODELS:
        raise KeyError(f"unknown real model '{name}'; choose one of {sorted(MODELS)}")
    member, sha256 = MODELS[name]
    target = cache_dir() / f"{PACKAGE}-{VERSION}" / Path(member).name
    if target.is_file() and _sha256(target) == sha256:
        return target
    wheel = _wheel()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        if _sha256(Path(tmp)) != sha256:
            raise RealModelUnavailable(f"{member} extracted from {wheel} does not have the pinned sha256 {sha256}")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache should be readable
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _wheel() -> Path:
    """The cached rapidocr wheel, downloaded with pip into a private folder then renamed into place."""
    wheels = cache_dir() / "wheels"
    wheel = wheels / WHEEL
    if wheel.is_file() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=wheels) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"{PACKAGE}=={VERSION}", "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RealModelUnavailable(f"could not run `{' '.join(cmd[1:])}`: {e}") from e
        got = Path(tmp) / WHEEL
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RealModelUnavailable(
                f"`pip download {PACKAGE}=={VERSION}` failed (exit {proc.returncode}), offline?: " + " | ".join(tail)
            )
        if _sha256(got) != WHEEL_SHA256:
            raise RealModelUnavailable(f"downloaded {WHEEL} does not have the pinned sha256 {WHEEL_SHA256}")
        os.replace(got, wheel)
    return wheel


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- inputs -------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at ``size`` px (the bundled FreeType font; the bitmap one without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _phrase(rng: np.random.Generator) -> str:
    words = [str(rng.choice(_WORDS)) for _ in range(int(rng.integers(2, 5)))]
    if rng.random() < 0.5:
        words.append(str(int(rng.integers(10, 99999))))
    text = " ".join(words)
    return text.capitalize() if rng.random() < 0.5 else text


def _colors(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(background, ink): light paper of a slightly varying tint, dark ink."""
    paper = tuple(int(v) for v in rng.integers(225, 256, size=3))
    ink = tuple(int(v) for v in rng.integers(0, 70, size=3))
    return paper, ink  # type: ignore[return-value]


def text_pages(count: int, *, size: tuple[int, int] = (160, 320), seed: int = 0) -> list[np.ndarray]:
    """``count`` RGB uint8 images of ``size`` (H, W): a few lines of text on paper.

    Drawn at twice the size and downscaled, as a detector's input usually is.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    pages = []
    for _ in range(count):
        paper, ink = _colors(rng)
        img = Image.new("RGB", (2 * w, 2 * h), paper)
        draw = ImageDraw.Draw(img)
        y = int(rng.integers(8, 30))
        while True:
            font = _font(int(rng.integers(24, 40)))
            text = _phrase(rng)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            if y + bottom > 2 * h - 8:
                break
            x = int(rng.integers(8, max(9, 2 * w - (right - left) - 8)))
            draw.text((x, y), text, fill=ink, font=font)
            y += bottom + int(rng.integers(14, 50))
        pages.append(np.asarray(img.resize((w, h), Image.BILINEAR)))
    return pages


def text_lines(count: int, *, seed: int = 0, rotate_every: int = 0) -> list[np.ndarray]:
    """``count`` RGB uint8 crops of one text line each, as a detector would cut them out.

    With ``rotate_every=k``, every k-th line (1st, k+1-th, ...) is upside down (what the
    cls model's '180' label means).
    """
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        paper, ink = _colors(rng)
        font = _font(int(rng.integers(28, 40)))
        text = _phrase(rng)
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
        pad_x, pad_y = int(rng.integers(4, 12)), int(rng.integers(3, 9))
        img = Image.new("RGB", (right - left + 2 * pad_x, bottom - top + 2 * pad_y), paper)
        ImageDraw.Draw(img).text((pad_x - left, pad_y - top), text, fill=ink, font=font)
        if rotate_every and i % rotate_every == 0:
            img = img.rotate(180)
        lines.append(np.asarray(img))
    return lines


def _normalize_bgr(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 RGB uint8 -> 3xHxW float32 BGR, ``(x / 255 - 0.5) / 0.5``."""
    bgr = rgb[..., ::-1].astype(np.float32) / 255.0
    return ((bgr - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


def det_input(rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """1x3xHxW input of the det model; ``size`` (H, W) defaults to the image's, rounded to 32."""
    h, w = rgb.shape[:2]
    size = size or (max(32, round(h / 32) * 32), max(32, round(w / 32) * 32))
    if size[0] % 32 or size[1] % 32:
        raise ValueError(f"det input sides must be multiples of 32, got {size}")
    if (h, w) != tuple(size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))
    return _normalize_bgr(rgb)[None]


def line_input(rgb: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """1xCxHxW input of the cls (shape 3x48x192) or rec (3x48x320) model for one text line.

    Resized to height H keeping the aspect ratio (width at most W), zero-padded on the right
    after normalisation, as rapidocr's ``resize_norm_img`` does.
    """
    _, height, width = shape
    h, w = rgb.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / float(h))))
    resized = np.asarray(Image.fromarray(rgb).resize((resized_w, height), Image.BILINEAR))
    out = np.zeros(shape, dtype=np.float32)
    out[:, :, :resized_w] = _normalize_bgr(resized)
    return out[None]


def real_image_batch(kind: Kind, count: int, *, seed: int = 0, size: tuple[int, int] = (160, 320)) -> np.ndarray:
    """``count`` preprocessed samples for the ``kind`` model, shape (count, 1, 3, H, W), float32.

    det: text pages of ``size``; cls: text lines, every other one upside down, 3x48x192;
    rec: upright text lines, 3x48x320. Deterministic for a given ``seed``.
    """
    if kind == "det":
        return np.stack([det_input(p, size) for p in text_pages(count, size=size, seed=seed)])
    if kind == "cls":
        return np.stack([line_input(line, CLS_SHAPE) for line in text_lines(count, seed=seed, rotate_every=2)])
    if kind == "rec":
        return np.stack([line_input(line, REC_SHAPE) for line in text_lines(count, seed=seed)])
    raise ValueError(f"unknown kind '{kind}'; choose det, cls or rec")
