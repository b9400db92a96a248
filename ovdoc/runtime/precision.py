"""Which precision a fit computes features in: `ovdoc fit --precision auto|f32|bf16`.

Why a choice at all: OpenVINO runs CPU inference in bf16 by default on CPUs with native bf16, and bf16
moves features by a few per cent, so ovdoc pins f32 and records the precision in every bundle (a bundle is
scored in the precision it was built in). On CPUs with AMX, bf16 runs the backbones several times faster,
and a bundle built *and* scored in bf16 was measured as accurate as f32 (benchmarks/results/precision.md),
so `auto` takes bf16 there. Without AMX (AVX512-BF16 alone, AVX2) bf16 buys little or nothing, and `auto`
stays with f32: the numbers every record was made with.
"""

from __future__ import annotations

from ovdoc.errors import OvdocError

PRECISIONS = ("auto", "f32", "bf16")


def has_amx(cpuinfo: dict | None = None) -> bool:
    """True on a CPU with AMX bf16 tiles (Linux /proc/cpuinfo; elsewhere False: f32 is never wrong)."""
    from ovdoc.runtime.bench.machine import read_cpuinfo

    info = read_cpuinfo() if cpuinfo is None else cpuinfo
    return "amx_bf16" in set(info.get("flags", []))


def resolve_precision(requested: str, device: str, *, cpuinfo: dict | None = None) -> str:
    """'auto' -> 'bf16' on a CPU device with AMX, else 'f32'; 'f32'/'bf16' as given (a CPU without native
    bf16 computes in f32 anyway, and the bundle records what the compiled model reports)."""
    requested = requested.lower()
    if requested not in PRECISIONS:
        raise OvdocError(f"precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    cpu = device.split(":")[0].split(".")[0].upper() == "CPU"
    return "bf16" if cpu and has_amx(cpuinfo) else "f32"
