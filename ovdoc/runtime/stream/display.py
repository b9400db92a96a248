"""What the user sees: the annotated frame in a cv2 window, and the same frames saved as a video.

The score is drawn green below the threshold and red above it, with FPS; keys: q quit, p save the
frame, s start/stop scoring. No window when headless (asked for, or no display on Linux).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from ovdoc.errors import OvdocError, first_line

GREEN = (0, 200, 0)
RED = (0, 0, 255)
GREY = (160, 160, 160)
WINDOW = "ovdoc"


def display_available() -> bool:
    """A window can open: on Linux that needs an X11 or Wayland display."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def annotate(
    frame: np.ndarray,
    *,
    score: float | None,
    threshold: float,
    anomalous: bool,
    fps: float,
    scoring: bool = True,
) -> np.ndarray:
    out = frame.copy()
    scale = max(0.5, out.shape[1] / 900)
    if not scoring:
        text, colour = "scoring paused (s)", GREY
    elif score is None:
        text, colour = "warming up", GREY
    else:
        text = f"score {score:.2f} / {threshold:.2f}" + ("  ANOMALY" if anomalous else "")
        colour = RED if anomalous else GREEN
    width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, round(scale * 2)))[0][0]
    scale = max(0.3, min(scale, scale * (out.shape[1] - 20) / max(width, 1)))  # the line fits a small frame
    thick = max(1, round(scale * 2))
    _backdrop(out, text, scale, thick)
    cv2.putText(out, text, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    cv2.putText(
        out,
        f"{fps:5.1f} FPS",
        (10, int(62 * scale)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale * 0.8,
        GREY,
        thick,
        cv2.LINE_AA,
    )
    if scoring and anomalous:
        cv2.rectangle(out, (0, 0), (out.shape[1] - 1, out.shape[0] - 1), RED, max(2, thick * 2))
    return out


def _backdrop(out: np.ndarray, text: str, scale: float, thick: int) -> None:
    """Darken the strip behind the score and FPS lines: green or red text stays readable over a bright
    frame or a yellow heatmap (contrast), while the picture still shows through."""
    (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x1, y1 = min(out.shape[1], 20 + max(w, int(150 * scale))), min(out.shape[0], int(70 * scale))
    strip = out[:y1, :x1]
    strip[:] = (strip.astype(np.uint16) * 2 // 7).astype(np.uint8)


HEAT_FLOOR = 0.5  # heatmap drawn only where the map reaches this fraction of the threshold
HEAT_ALPHA = 0.45
YELLOW = (0, 220, 255)
# At most this share of the frame is painted: a scene unlike the bundle's (a street for a tile bundle) is hot
# everywhere, and a fully painted frame hides the picture a person needs to judge; the hottest part shows.
HEAT_MAX_COVER = 0.25


def heatmap_colours(frame_map: np.ndarray, threshold: float) -> np.ndarray:
    """BGR uint8 JET colours of a map normalised to the threshold: 0 -> blue, threshold -> bright red,
    above it darker red.

    Normalised to the threshold, not to each map's own maximum, so colours mean the same thing on
    every frame: a quiet frame stays blue-green, and red always means "at or above the threshold".
    JET is bright red at 7/8 of its range (224 of 255); the threshold is put there.
    """
    scale = 224.0 / threshold if threshold > 0 else 0.0
    level = np.clip(np.asarray(frame_map, np.float32) * scale, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(level, cv2.COLORMAP_JET)


def painted(frame_map: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    """(where the overlay paints, the share of the frame at or above HEAT_FLOOR x threshold): every such
    pixel, or only the hottest HEAT_MAX_COVER of the frame when more than that is hot."""
    hot = frame_map >= HEAT_FLOOR * threshold
    cover = float(hot.mean())
    if cover > HEAT_MAX_COVER:
        hot &= frame_map >= np.quantile(frame_map, 1.0 - HEAT_MAX_COVER)
    return hot, cover


def overlay_heatmap(
    image: np.ndarray,
    frame_map: np.ndarray,
    threshold: float,
    *,
    box: tuple[int, int, int, int] | None = None,
    anomalous: bool = False,
    alpha: float = HEAT_ALPHA,
) -> np.ndarray:
    """A copy of `image` with the anomaly map blended in where it reaches HEAT_FLOOR x threshold, and the
    hottest region's box (red when the frame is anomalous, yellow otherwise) when any of it is hot.

    Pure: `image` (HxWx3 uint8) and `frame_map` (HxW, frame-sized) are not modified.
    """
    if frame_map.shape[:2] != image.shape[:2]:
        raise ValueError(f"map {frame_map.shape[:2]} and frame {image.shape[:2]} differ in size")
    out = image.copy()
    hot, cover = painted(frame_map, threshold)
    capped = cover > HEAT_MAX_COVER
    if hot.any():
        colours = heatmap_colours(frame_map, threshold)
        blended = cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0)
        out[hot] = blended[hot]
        if box is not None:  # the box holds the peak, which is hot when anything is
            thick = max(2, round(image.shape[1] / 320))
            cv2.rectangle(out, box[:2], box[2:], RED if anomalous else YELLOW, thick)
        heat_legend(out, cover if capped else None)
    return out


def heat_legend(out: np.ndarray, capped_cover: float | None) -> None:
    """A colour bar in the top-right corner, from HEAT_FLOOR x threshold (blue) to the threshold (red,
    marked), and "hottest 25% of 87% shown" when the overlay was capped: what the colours mean."""
    h, w = out.shape[:2]
    scale = max(0.35, w / 1400)
    bar_w, bar_h = int(110 * scale * 2), max(6, int(8 * scale * 2))
    x0, y0 = w - bar_w - 8, 6
    if x0 < w // 2 or y0 + bar_h + 30 * scale > h:  # too small a frame for a legend
        return
    lo, hi = int(255 * HEAT_FLOOR * 224 / 255), 255
    ramp = np.linspace(lo, hi, bar_w).astype(np.uint8)[None, :].repeat(bar_h, 0)
    out[y0:y0 + bar_h, x0:x0 + bar_w] = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)
    at = x0 + int(bar_w * (224 - lo) / (hi - lo))  # where the threshold sits on the bar
    cv2.line(out, (at, y0 - 3), (at, y0 + bar_h + 2), (255, 255, 255), 1)
    label = "heat: 0.5x to 1x threshold (white mark)"
    if capped_cover is not None:
        label = f"hottest {HEAT_MAX_COVER:.0%} shown ({capped_cover:.0%} hot)"
    (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    tx, ty = max(0, w - tw - 8), y0 + bar_h + th + 6
    band = out[ty - th - 3:ty + 4, tx - 3:w]
    band[:] = (band.astype(np.uint16) * 2 // 7).astype(np.uint8)
    cv2.putText(out, label, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


class Window:
    """A cv2 window; `show` returns 'quit', 'save', 'toggle' or None for the key pressed."""

    def __init__(self, snapshot_dir: Path | None = None, title: str = WINDOW) -> None:
        self.snapshot_dir = snapshot_dir or Path.cwd()
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise OvdocError(f"cannot open a window ({first_line(exc, 120)}); use --headless") from exc

    def show(self, image: np.ndarray) -> str | None:
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        return {ord("q"): "quit", 27: "quit", ord("p"): "save", ord("s"): "toggle"}.get(key)

    def save(self, image: np.ndarray, heatmap: np.ndarray | None = None) -> Path:
        """The frame as shown (PNG), and beside it `-heatmap.png` when there is one (patch mode)."""
        path = self.snapshot_dir / time.strftime("ovdoc-%Y%m%d-%H%M%S.png")
        cv2.imwrite(str(path), image)
        if heatmap is not None:
            cv2.imwrite(str(path.with_name(path.stem + "-heatmap.png")), heatmap)
        return path

    def close(self) -> None:
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.title)


class VideoSink:
    """`--save-video`: written to a hidden temporary beside the target, renamed over it only when complete.

    The temporary keeps the target's extension because OpenCV picks the container from it.
    """

    FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "MJPG", ".mov": "mp4v"}

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in self.FOURCC:
            raise OvdocError(f"--save-video: use a .avi, .mp4, .mkv or .mov file name, got {self.path.name}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{suffix}")
        from ovdoc.atomic import sweep_leftovers  # a killed run's partial video goes (ovdoc.atomic)

        sweep_leftovers(self.path, extra=((f".{self.path.stem}.", f".partial{suffix}"),))
        self.fps = fps if fps and fps > 0 else 25.0
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            h, w = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*self.FOURCC[self.path.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (w, h))
            if not self.writer.isOpened():
                self.discard()
                raise OvdocError(f"cannot write video {self.path} (no encoder for {self.path.suffix})")
        self.writer.write(image)
        self.frames += 1

    def finish(self) -> Path | None:
        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.tmp.exists():
            self.tmp.unlink()
