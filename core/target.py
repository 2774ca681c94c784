"""The deployment target: which CPU (model, architecture, ISA features), threads, and the
runtime's inference precision.

What runs fast, and how integer kernels round, depends on the CPU: MLAS's u8 x s8 GEMM
saturates on x86 without VNNI, OpenVINO computes in bf16 by itself on CPUs with
AVX512-BF16 or AMX. A decision that depends on the CPU reads it from the target, never from
the build machine behind the user's back, so a CI runner on AVX2 can build for an
AVX-512/AMX server (``--target avx512-vnni-bf16`` or a file saved on that server with
``onnxsmith target --save``). Without one, the target is this machine (``host``).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from onnxsmith.errors import RecipeError
from onnxsmith.safe_yaml import load_yaml

__all__ = ["HOST", "PRECISIONS", "PRESETS", "CpuTarget", "Target", "cpu_from_data", "detect_cpu", "load_target", "read_data_file", "save_target", "target_for"]

HOST = "host"
PRECISIONS = ("fp32", "bf16", "fp16")  # a runtime's whole-model inference precision (OpenVINO's hint)
MAX_TARGET_FILE_BYTES = 64 << 10

# The /proc/cpuinfo flags that change what runs fast or how it rounds (x86 "flags", ARM "Features").
_KNOWN_FEATURES = frozenset({
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "avx_vnni_int8",
    "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme",
})
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


@dataclass(frozen=True)
class CpuTarget:
    """One CPU as the tool reasons about it: its name, architecture and ISA features."""

    model: str
    arch: str  # platform.machine() spelling: x86_64, aarch64, arm64
    features: frozenset[str]
    cores: int = 0  # 0: unknown
    source: str = HOST  # "host", a preset name, or the file it was read from

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in _X86

    @property
    def int8_dot(self) -> bool:
        """int8 products accumulate in int32 in one instruction (VNNI, AMX, ARM's dot product)."""
        if self.is_x86:
            return bool(self.features & {"avx512_vnni", "avx_vnni", "amx_int8"})
        return "asimddp" in self.features

    @property
    def u8s8_saturates(self) -> bool:
        """MLAS's u8 x s8 GEMM adds product pairs in int16 (vpmaddubsw) on x86 without VNNI:
        full-range int8 weights saturate there (255*127*2 > 32767), 7-bit weights do not."""
        return self.is_x86 and not self.int8_dot

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware: OpenVINO's CPU plugin then defaults to bf16."""
        return bool(self.features & {"avx512_bf16", "amx_bf16"}) if self.is_x86 else "bf16" in self.features

    @property
    def isa(self) -> str:
        """The few words that say what this CPU's kernels can do, for tables: ``x86_64 AVX2``,
        ``x86_64 AVX-512 VNNI BF16``, ``x86_64 AMX``, ``aarch64 NEON DOT``."""
        words = [self.arch]
        f = self.features
        if self.is_x86:
            words.append("AMX" if "amx_tile" in f else "AVX-512" if "avx512f" in f else "AVX2" if "avx2" in f else "SSE")
            if "amx_tile" not in f:
                words += [w for w, flags in (("VNNI", {"avx512_vnni", "avx_vnni"}), ("BF16", {"avx512_bf16"}),
                                             ("FP16", {"avx512_fp16"})) if f & flags]
        else:
            words += [w for w, flag in (("NEON", "asimd"), ("DOT", "asimddp"), ("I8MM", "i8mm"), ("BF16", "bf16"),
                                        ("SVE", "sve")) if flag in f]
        return " ".join(words)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "arch": self.arch, "isa": self.isa, "features": sorted(self.features),
                "cores": self.cores, "source": self.source}


@dataclass(frozen=True)
class Target:
    """Where the artifact will run: the CPU, the runtime's threads and inference precision."""

    cpu: CpuTarget
    threads: int = 0  # intra-op threads of the runtime; 0: the runtime's default (one per core)
    precision: str = "fp32"  # the runtime's whole-model inference precision (OpenVINO's hint)
    host: CpuTarget | None = field(default=None, compare=False)  # where it is measured, when that is another CPU

    @property
    def measured_elsewhere(self) -> bool:
        """True when timings and kernel rounding come from a CPU other than the target's."""
        return self.host is not None and (self.host.arch, self.host.features) != (self.cpu.arch, self.cpu.features)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"cpu": self.cpu.to_dict(), "threads": self.threads, "precision": self.precision}
        if self.measured_elsewhere:
            data["measured_on"] = self.host.to_dict()
        return data

    def warnings(self) -> list[str]:
        """What the user must know when this machine stands in for another CPU."""
        if not self.measured_elsewhere:
            return []
        host, cpu = self.host, self.cpu
        notes = [f"target CPU is {cpu.model} ({cpu.isa}) but this machine is {host.model} ({host.isa}): latency and "
                 "profiles were measured here, not on the target"]
        if host.u8s8_saturates != cpu.u8s8_saturates:
            notes.append("int8 kernels round differently on the target (VNNI or not): the int8 drift measured here is "
                         "an estimate; verify on the target")
        if self.precision != "fp32" and host.native_bf16 != cpu.native_bf16:
            notes.append(f"{self.precision} runs natively on only one of the two CPUs: its drift and speed measured here "
                         "do not hold on the target")
        return notes


def physical_memory_bytes() -> int:
    """This machine's physical memory (what a declared size is checked against before allocating)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@functools.lru_cache(maxsize=1)
def detect_cpu() -> CpuTarget:
    """This machine's CPU, from /proc/cpuinfo where there is one."""
    arch = platform.machine() or "unknown"
    model, features = platform.processor() or arch, frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model name", "Hardware", "CPU part"):
        found = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if found:
            model = found.group(1).strip()
            break
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.MULTILINE)
    if flags:
        features = frozenset(flags.group(1).split()) & _KNOWN_FEATURES
    elif arch.lower() in ("arm64", "aarch64"):
        features = frozenset({"asimd"})  # every 64-bit ARM has NEON
    return CpuTarget(model, arch, features, os.cpu_count() or 0, HOST)


def _preset(name: str, model: str, arch: str, features: str) -> CpuTarget:
    return CpuTarget(model, arch, frozenset(features.split()), 0, name)


# Named CPUs to build for from another machine; the features are those the kernels key on.
PRESETS: dict[str, CpuTarget] = {p.source: p for p in (
    _preset("avx2", "x86-64 with AVX2, no VNNI (Haswell..Skylake client, Zen 1-3)", "x86_64", "avx avx2 fma f16c"),
    _preset("avx512-vnni", "x86-64 with AVX-512 VNNI (Cascade Lake, Ice Lake)", "x86_64",
            "avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni"),
    _preset("avx512-vnni-bf16", "x86-64 with AVX-512 VNNI and BF16 (Cooper Lake, Zen 4/5)", "x86_64",
            "avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16"),
    _preset("amx", "x86-64 with AMX (Sapphire Rapids and later)", "x86_64",
            "avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_int8 amx_bf16"),
    _preset("arm64", "ARMv8.2+ with dot product, i8mm and bf16 (Graviton 3, Neoverse V1)", "aarch64",
            "asimd asimdhp asimddp i8mm bf16 sve"),
)}


def load_target(cpu: str | None = None, *, threads: int = 0, precision: str = "fp32") -> Target:
    """The target ``cpu`` names: None or ``host`` (this machine), a preset (PRESETS), or a
    JSON/YAML file written by ``onnxsmith target --save`` (or by hand: model, arch, features)."""
    if precision not in PRECISIONS:
        raise RecipeError(f"unknown inference precision '{precision}'", f"choose one of: {', '.join(PRECISIONS)}")
    if threads < 0:
        raise RecipeError(f"threads must be 0 (the runtime's default) or more, got {threads}", "give --threads N with N >= 0")
    if cpu is None or cpu == HOST:
        return Target(detect_cpu(), threads, precision)
    return target_for(PRESETS.get(cpu) or _read_target_file(cpu), threads=threads, precision=precision)


def target_for(cpu: CpuTarget, *, threads: int = 0, precision: str = "fp32") -> Target:
    """A target of ``cpu`` built on this machine (which may be another CPU)."""
    return Target(cpu, threads, precision, host=detect_cpu())


def _read_target_file(spec: str) -> CpuTarget:
    """A CpuTarget from a small JSON/YAML file; the file is data, checked field by field."""
    fix = f"give --target one of: {HOST}, {', '.join(PRESETS)}, or a file from `onnxsmith target --save FILE`"
    if not Path(spec).is_file():
        raise RecipeError(f"target '{spec}' is neither a known CPU nor a file", fix)
    return cpu_from_data(read_data_file(Path(spec), MAX_TARGET_FILE_BYTES, "target file", fix), spec, fix)


def read_data_file(path: Path, max_bytes: int, what: str, fix: str, *, json_only: bool = False) -> Any:
    """The parsed JSON (or, unless ``json_only``, YAML) of a small file the user gave (a target,
    a cost table): untrusted data, so its size is checked before reading and nothing in it is
    constructed but plain values; a missing, oversized or malformed file is a one-line
    RecipeError ending in ``fix``."""
    if not path.is_file():
        raise RecipeError(f"{what} {path} does not exist", fix)
    if path.stat().st_size > max_bytes:
        raise RecipeError(f"{what} {path} is larger than {max_bytes >> 10} KiB", fix)
    try:
        text = path.read_text()
        return json.loads(text) if json_only else load_yaml(text)
    except (yaml.YAMLError, ValueError) as e:  # json's and unicode's decode errors are ValueErrors
        kind = "JSON" if json_only else "JSON or YAML"
        raise RecipeError(f"{what} {path} is not {kind}: {str(e).splitlines()[0]}", fix) from None


def cpu_from_data(data: Any, source: str, fix: str) -> CpuTarget:
    """A CpuTarget from parsed file data (``{"cpu": {...}}`` or the CPU's fields themselves)."""
    data = data.get("cpu", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not isinstance(data.get("arch"), str) or not isinstance(data.get("features"), list):
        raise RecipeError(f"{source} needs 'arch' (a string) and 'features' (a list of ISA flags)", fix)
    features = [f for f in data["features"] if isinstance(f, str)]
    cores = data.get("cores", 0)
    return CpuTarget(str(data.get("model", data["arch"]))[:200], data["arch"][:40], frozenset(features) & _KNOWN_FEATURES,
                     cores if isinstance(cores, int) and cores >= 0 else 0, source)


def save_target(target: Target) -> str:
    """The JSON text ``onnxsmith target --save`` writes: what load_target reads back."""
    cpu = replace(target.cpu, source=HOST)
    return json.dumps({"cpu": cpu.to_dict(), "threads": target.threads}, indent=2) + "\n"
