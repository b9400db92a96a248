"""What machine a benchmark ran on, so figures from different boxes are never compared blindly.

CPU model, core counts and the instruction-set flags that decide OpenVINO's fast paths (AVX2, AVX-512,
VNNI for INT8, BF16/AMX for bf16) come from /proc/cpuinfo (Linux) with a `platform` fallback elsewhere.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from ovdoc.errors import first_line

# flag in /proc/cpuinfo -> name in the report
CPU_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512F",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_tile": "AMX-TILE",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
    "avx512_fp16": "AVX512-FP16",
}


def read_cpuinfo(path: str | os.PathLike = "/proc/cpuinfo") -> dict:
    """Model name, logical/physical core counts and flags from a Linux cpuinfo file ({} if unreadable)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return {}
    model, flags = "", set()
    logical, physical = 0, set()
    phys_id = core_id = None
    for line in text.splitlines() + [""]:
        if not line.strip():  # end of one processor block
            if phys_id is not None or core_id is not None:
                physical.add((phys_id, core_id))
            phys_id = core_id = None
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            logical += 1
        elif key == "model name" and not model:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            phys_id = value
        elif key == "core id":
            core_id = value
    return {
        "cpu_model": model,
        "logical_cores": logical,
        "physical_cores": len(physical) or logical,
        "flags": sorted(flags),
    }


def describe_machine(core=None) -> dict:
    """JSON-ready description: CPU, ISA features, memory, OS, Python, OpenVINO and its devices."""
    info = read_cpuinfo()
    flags = set(info.get("flags", []))
    isa = [name for flag, name in CPU_FLAGS.items() if flag in flags]
    desc: dict = {
        "cpu_model": info.get("cpu_model") or platform.processor() or platform.machine(),
        "logical_cores": info.get("logical_cores") or os.cpu_count(),
        "physical_cores": info.get("physical_cores") or os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "isa": isa,
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "distro": _distro(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        # other work on the box skews every timing: record how busy it was when the figures were taken
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    try:
        import openvino as ov

        from ovdoc.runtime.devices import describe_devices

        desc["openvino"] = ov.__version__
        desc["devices"] = describe_devices(core)
    except Exception as exc:  # the description must not stop a benchmark
        desc["openvino_error"] = first_line(exc, 200)
    return desc


def summary_line(desc: dict) -> str:
    """One line for terminal headers: 'AMD EPYC, 2 cores, AVX2 AVX-512F ..., OpenVINO 2026.4'."""
    isa = " ".join(desc.get("isa", [])) or "no AVX2"
    ov_version = str(desc.get("openvino", "?")).split("-")[0]
    return (
        f"{desc.get('cpu_model', '?')}, {desc.get('usable_cores', '?')} cores, {isa}, "
        f"{desc.get('memory_gb', '?')} GB, {desc.get('os', '?')}, OpenVINO {ov_version}"
    )


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    try:
        import psutil

        return round(psutil.virtual_memory().total / 1024**3, 1)
    except Exception:
        return None


def _distro() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""
