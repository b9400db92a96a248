"""Which OpenVINO devices this machine has, and one clear line when a requested one is not usable."""

from __future__ import annotations

import openvino as ov

from ovdoc.errors import OvdocError

# Plugins that left OpenVINO: say so instead of "unknown device".
REMOVED_DEVICES = {
    "MYRIAD": "the MYRIAD plugin (Neural Compute Stick 2) left OpenVINO in 2023.0; use CPU, GPU (Intel "
    "integrated graphics) or NPU (Core Ultra), or pin openvino<2023 on a host that still has the stick",
    "HDDL": "the HDDL plugin (Vision Accelerator Design with Myriad VPUs) left OpenVINO in 2023.0; use CPU, "
    "GPU or NPU instead",
    "GNA": "the GNA plugin left OpenVINO in 2024.0; use CPU or NPU instead",
}
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def _core(core: ov.Core | None) -> ov.Core:
    return core if core is not None else ov.Core()


def describe_devices(core: ov.Core | None = None) -> list[dict]:
    """Name, full name, optimisation capabilities (optimal precisions) of every device present."""
    core = _core(core)
    rows = []
    for name in core.available_devices:
        row: dict = {"name": name}
        for key, prop in (
            ("full_name", "FULL_DEVICE_NAME"),
            ("capabilities", "OPTIMIZATION_CAPABILITIES"),
            ("architecture", "DEVICE_ARCHITECTURE"),
            ("default_inference_precision", "INFERENCE_PRECISION_HINT"),
        ):
            try:
                value = core.get_property(name, prop)
            except Exception:  # a plugin may not expose every property
                continue
            row[key] = list(value) if isinstance(value, (list, tuple)) else _text(value)
        rows.append(row)
    return rows


def check_device(device: str, core: ov.Core | None = None) -> str:
    """Return `device` if OpenVINO can use it here; raise one line listing what is present otherwise.

    Accepts plain devices (CPU, GPU, GPU.1, NPU) and virtual ones (AUTO, AUTO:GPU,CPU, MULTI:..., HETERO:...).
    """
    core = _core(core)
    present = list(core.available_devices)
    device = device.strip()
    if not device:
        raise OvdocError(f"empty device name; devices present here: {', '.join(present)}")
    head, _, rest = device.partition(":")
    head_u = head.upper()
    if head_u in VIRTUAL_DEVICES:
        members = [m.strip() for m in rest.split(",") if m.strip()] if rest else []
        for member in members:
            _check_plain(member, present)
        if not present:
            raise OvdocError(f"{head_u} needs at least one device, and OpenVINO finds none here")
        return head_u + (":" + ",".join(members) if members else "")
    return _check_plain(device, present)


def _check_plain(device: str, present: list[str]) -> str:
    base = device.split(".")[0].upper()
    if base in REMOVED_DEVICES:
        raise OvdocError(f"device {device}: {REMOVED_DEVICES[base]}")
    upper = device.upper()
    if upper in present:
        return upper
    if base == upper and any(p.split(".")[0] == base for p in present):
        return upper  # "GPU" when only "GPU.0"/"GPU.1" are listed
    hint = {
        "GPU": " (the GPU plugin needs Intel's GPU compute runtime: see the README's board section)",
        "NPU": " (the NPU plugin needs the Intel NPU driver: see the README's board section)",
    }.get(base, "")
    raise OvdocError(f"device {device!r} is not available here{hint}; devices present: {', '.join(present)}")


def _text(value: object) -> str:
    """OpenVINO returns some properties as `ov.Type`; print them as 'bf16', not '<Type: ...>'."""
    if isinstance(value, ov.Type):
        return value.get_type_name()
    return str(value)
