"""A line config: every camera of a box in one small JSON or YAML file (`ovdoc run --config line.yaml`).

    bundle: tiles.bundle          # default for cameras that name none (else `ovdoc run BUNDLE`)
    res: 640x480                  # defaults: res, threshold, smooth (else the command line's)
    cameras:
      - source: 0
        name: left belt
      - source: rtsp://10.0.0.7/stream
        name: right belt
        threshold: 7.2
      - source: line3.mp4
        bundle: caps.bundle       # another product: its own model, shared by its cameras
        res: 1280x720
        smooth: 5
    outputs:                      # any `ovdoc run` output option, without "--" (the command line wins)
      mqtt: mqtt://broker:1883/line1
      opcua-server: 127.0.0.1:4840

Relative paths (bundles, files, folders) are read relative to the config file, so a line folder can be
moved as a whole. Cameras of one bundle share one compiled model; each bundle is loaded once.
Mistakes are one line naming the camera and the key, before any model loads.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ovdoc.errors import OvdocError
from ovdoc.runtime.stream.sources import parse_res

TOP_KEYS = {"bundle", "res", "threshold", "smooth", "cameras", "outputs"}
CAMERA_KEYS = {"source", "name", "bundle", "res", "threshold", "smooth", "node"}


@dataclass(frozen=True)
class CameraSpec:
    """One camera of a line: where its frames come from and how it is judged."""

    source: str
    bundle: str
    name: str | None = None
    res: tuple[int, int] | None = None
    threshold: float | None = None
    smooth: int | None = None
    node: str | None = None  # `ovdoc run --ray`: run on a node with this label (a Ray custom resource)


@dataclass(frozen=True)
class LineConfig:
    cameras: list[CameraSpec]
    outputs: dict = field(default_factory=dict)  # output option values (output_registry), e.g. {"mqtt": ...}

    @property
    def bundles(self) -> list[str]:
        """Distinct bundles in the order cameras first name them (model 0, 1, ...)."""
        return list(dict.fromkeys(camera.bundle for camera in self.cameras))

    def model_of(self, camera: CameraSpec) -> int:
        return self.bundles.index(camera.bundle)

    def check_bundles(self, where: str | Path) -> None:
        """A bundle that is not there is one line naming the camera that wants it, before any model loads
        (a line of eight cameras and four bundles: which camera's entry is wrong)."""
        for i, camera in enumerate(self.cameras):
            if not Path(camera.bundle).exists():
                named = f" ({camera.name})" if camera.name else ""
                raise OvdocError(f"{where}: camera {i + 1}{named}: bundle not found: {camera.bundle}")


def read_mapping(path: Path) -> dict:
    """The file as a mapping: JSON by suffix .json, YAML (PyYAML) otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OvdocError(f"cannot read the line config {path}: {exc.strerror or exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise OvdocError(f"{path} is not valid JSON: {exc}") from exc
    else:
        try:
            import yaml
        except ImportError as exc:
            raise OvdocError(f"{path}: YAML needs PyYAML (pip install pyyaml), or write it as .json") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            raise OvdocError(f"{path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise OvdocError(f"{path}: a line config is a mapping with a 'cameras' list")
    return data


def _threshold(value, where: str) -> float | None:
    if value is None:
        return None
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e9 or -1.0e9 as text
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise OvdocError(f"{where}: threshold must be a finite number, got {value!r}")
    return number


def _smooth(value, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OvdocError(f"{where}: smooth must be a whole number of frames >= 1, got {value!r}")
    return value


def _res(value, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        return parse_res(str(value))
    except OvdocError as exc:
        raise OvdocError(f"{where}: res must look like 640x480, got {value!r}") from exc


def _path_like(text: str, base: Path) -> str:
    """A camera index or URL stays as it is; a relative path is relative to the config's folder."""
    if text.isdigit() or "://" in text:
        return text
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else base / path)


def load_line_config(
    path: str | Path,
    *,
    bundle: str | None = None,
    res: tuple[int, int] | None = None,
    threshold: float | None = None,
    smooth: int | None = None,
) -> LineConfig:
    """Read and check a line config; the keyword values are the command line's defaults, which the
    file's top-level keys and then each camera's own keys override."""
    path = Path(path)
    data = read_mapping(path)
    base = path.resolve().parent
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise OvdocError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_KEYS))})")
    if data.get("bundle") is not None:
        bundle = _path_like(str(data["bundle"]), base)
    res = _res(data.get("res"), str(path)) or res
    top_threshold = _threshold(data.get("threshold"), str(path))
    threshold = top_threshold if top_threshold is not None else threshold
    smooth = _smooth(data.get("smooth"), str(path)) or smooth
    cameras = data.get("cameras")
    if not isinstance(cameras, list) or not cameras:
        raise OvdocError(f"{path}: 'cameras' must be a non-empty list of cameras (each with a source)")
    specs: list[CameraSpec] = []
    for i, camera in enumerate(cameras):
        where = f"{path}: camera {i + 1}"
        if not isinstance(camera, dict):
            raise OvdocError(f"{where}: each camera is a mapping with at least a 'source'")
        unknown = sorted(set(camera) - CAMERA_KEYS)
        if unknown:
            raise OvdocError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(CAMERA_KEYS))})")
        if camera.get("source") is None or str(camera["source"]).strip() == "":
            raise OvdocError(f"{where}: 'source' is missing (a camera index, a file, a folder or a URL)")
        own_bundle = camera.get("bundle")
        chosen = _path_like(str(own_bundle), base) if own_bundle is not None else bundle
        if chosen is None:
            raise OvdocError(f"{where}: no bundle (name one for the camera, at the top, or ovdoc run BUNDLE)")
        name = camera.get("name")
        own_threshold = _threshold(camera.get("threshold"), where)
        specs.append(
            CameraSpec(
                source=_path_like(str(camera["source"]).strip(), base),
                bundle=chosen,
                name=str(name) if name is not None else None,
                res=_res(camera.get("res"), where) or res,
                threshold=own_threshold if own_threshold is not None else threshold,
                smooth=_smooth(camera.get("smooth"), where) or smooth,
                node=str(camera["node"]) if camera.get("node") is not None else None,
            )
        )
    names = [spec.name for spec in specs if spec.name is not None]
    if len(names) != len(set(names)):
        twice = next(n for n in names if names.count(n) > 1)
        raise OvdocError(f"{path}: two cameras are named {twice!r}: names tell cameras apart in events")
    return LineConfig(specs, _outputs(data.get("outputs"), path, base))


def _outputs(mapping, path: Path, base: Path) -> dict:
    """The `outputs:` section through the output registry; paths relative to the config file."""
    if mapping is None:
        return {}
    from ovdoc.runtime.stream.output_registry import from_config, options

    values = from_config(mapping, str(path))
    for option in options():
        if option.kind in ("file", "dir") and option.dest in values:
            values[option.dest] = _path_like(values[option.dest], base)
    return values
