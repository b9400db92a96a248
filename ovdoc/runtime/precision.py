"""Which precision a fit computes features in: `ovdoc fit --precision auto|f32|bf16`.

Why a choice at all: OpenVINO runs CPU inference in bf16 by default on CPUs with native bf16, and bf16
moves features by a few per cent, so ovdoc pins f32 and records the precision in every bundle (a bundle is
scored in the precision it was built in). On CPUs with AMX, bf16 runs the backbones several times faster,
and a bundle built *and* scored in bf16 was measured as accurate as f32 (benchmarks/results/precision.md),
so `auto` takes bf16 there. Without AMX (AVX512-BF16 alone, AVX2) bf16 buys little or nothing, and `auto`
stays with f32: the numbers every record was made with.
"""

from __future__ import annotations

from pathlib import Path

from ovdoc.errors import OvdocError

PRECISIONS = ("auto", "f32", "bf16")


def has_amx(cpuinfo: dict | None = None) -> bool:
    """True on a CPU with AMX bf16 tiles (Linux /proc/cpuinfo; elsewhere False: f32 is never wrong)."""
    from ovdoc.runtime.bench.machine import read_cpuinfo

    info = read_cpuinfo() if cpuinfo is None else cpuinfo
    return "amx_bf16" in set(info.get("flags", []))


def is_shipped_backbone(model_xml: str | Path | None) -> bool:
    """True for an IR inside the installed ovdoc/irmodels (the backbones bf16 was measured on)."""
    if model_xml is None:
        return False
    from ovdoc.irmodels import ROOT

    try:
        return Path(model_xml).resolve().is_relative_to(ROOT.resolve())
    except OSError:
        return False


def resolve_precision(requested: str, device: str, *, model_xml: str | Path | None = None,
                      cpuinfo: dict | None = None) -> str:
    """'auto' -> 'bf16' for a shipped backbone on a CPU device with AMX, else 'f32'; 'f32'/'bf16' as given
    (a CPU without native bf16 computes in f32 anyway, and the bundle records what the compiled model
    reports). Your own IRs stay f32 under auto: bf16 moved the seed DOC model's features by ~40 %
    (tests/test_precision.py), the shipped backbones' by ~6 % with the same AUROC."""
    requested = requested.lower()
    if requested not in PRECISIONS:
        raise OvdocError(f"precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    cpu = device.split(":")[0].split(".")[0].upper() == "CPU"
    return "bf16" if cpu and is_shipped_backbone(model_xml) and has_amx(cpuinfo) else "f32"
