"""Frame sources for `ovdoc run`: camera index, video file, image folder, network stream URL.

A source says whether it is live: a live source may drop frames when scoring falls behind and is
retried when it stops delivering (camera unplugged, stream dropped); a file never drops a frame and
ends cleanly at its last one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.log import native_stderr_silenced
from ovdoc.runtime.images import IMAGE_SUFFIXES, expand_sources, is_image_file, read_image
from ovdoc.runtime.preprocess import fit_to

Opener = Callable[[], "cv2.VideoCapture"]


@dataclass
class Frame:
    index: int
    timestamp: float  # seconds: position in a file, wall-clock (epoch) time for a live source
    image: np.ndarray
    source_id: int = 0  # which source of the run (several cameras can share one compiled model)
    read_at: float = 0.0  # time.monotonic() when the reader had it: the loop's latency starts here


def parse_res(text: str | None) -> tuple[int, int] | None:
    """'640x480' -> (640, 480); None stays None (native size)."""
    if text is None or text == "":
        return None
    try:
        w, h = (int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError as exc:
        raise OvdocError(f"--res must look like 640x480, got {text!r}") from exc
    if w <= 0 or h <= 0 or w > 16384 or h > 16384:
        raise OvdocError(f"--res must be a positive size like 640x480, got {text!r}")
    return w, h


class FrameSource:
    """Base class: `open()`, `read() -> Frame | None` (None = ended or failed), `reopen()`, `close()`.

    `read` returns frames at `res`; `read_raw` returns them as decoded, so the pipeline can resize in
    its prepare thread while the capture thread decodes the next frame.
    """

    live: bool = False
    name: str = "?"
    res: tuple[int, int] | None = None
    fps: float | None = None  # a file's own frame rate, when it has one (--realtime replays at it)

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Frame | None:
        frame = self.read_raw()
        if frame is not None:
            frame.image = fit_to(frame.image, self.res)
        return frame

    def read_raw(self) -> Frame | None:
        raise NotImplementedError

    def reopen(self) -> bool:
        """Try to get the source back after a failed read (live sources); True if it delivers again."""
        return False

    def rewind(self) -> bool:
        """Start a file or folder again from its first frame (`--loop`); True if it can."""
        return False

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"name": self.name, "live": self.live, "kind": type(self).__name__}


class CaptureSource(FrameSource):
    """Anything cv2.VideoCapture opens: a video file, a camera, an RTSP/HTTP stream.

    `opener` builds the VideoCapture, so reconnecting is just calling it again.
    """

    def __init__(
        self,
        opener: Opener,
        name: str,
        *,
        live: bool,
        res: tuple[int, int] | None = None,
        what: str = "source",
    ) -> None:
        self.opener = opener
        self.name = name
        self.live = live
        self.res = res
        self.what = what
        self.cap: cv2.VideoCapture | None = None
        self.index = 0
        self.fps: float | None = None

    def _open_once(self) -> bool:
        self.close()
        try:
            cap = self.opener()
        except cv2.error:
            return False
        if cap is None or not cap.isOpened():
            return False
        self.cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and np.isfinite(fps) else None
        return True

    def open(self) -> None:
        if not self._open_once():
            raise OvdocError(f"cannot open {self.what} {self.name}")

    def read_raw(self) -> Frame | None:
        if self.cap is None:
            return None
        try:
            ok, image = self.cap.read()
        except cv2.error:
            ok, image = False, None
        if not ok or image is None:
            return None
        if self.live:
            stamp = time.time()
        else:
            pos = self.cap.get(cv2.CAP_PROP_POS_MSEC)
            stamp = pos / 1000.0 if pos and pos > 0 else self.index / (self.fps or 1.0)
        frame = Frame(self.index, float(stamp), image)
        self.index += 1
        return frame

    def reopen(self) -> bool:
        return self.live and self._open_once()

    def rewind(self) -> bool:
        """A file opened afresh rather than seeked: seeking to frame 0 is unreliable in some containers."""
        if self.live or not self._open_once():
            return False
        self.index = 0
        return True

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class ImageFolderSource(FrameSource):
    """Images of a folder (recursive, sorted) as a stream; one frame per image, never dropped."""

    live = False

    def __init__(self, folder: Path, res: tuple[int, int] | None = None) -> None:
        self.folder = folder
        self.name = str(folder)
        self.res = res
        self.files: list[Path] = []
        self.index = 0

    def open(self) -> None:
        try:
            files = [p for p in expand_sources(self.folder) if is_image_file(p)]
        except OvdocError as exc:
            raise OvdocError(f"cannot use {self.folder} as a source: {exc}") from exc
        if not files:
            raise OvdocError(f"no images in folder {self.folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
        self.files = files

    def read_raw(self) -> Frame | None:
        if self.index >= len(self.files):
            return None
        image = read_image(self.files[self.index])
        frame = Frame(self.index, float(self.index), image)
        self.index += 1
        return frame

    def rewind(self) -> bool:
        self.index = 0
        return bool(self.files)


def camera_opener(index: int, res: tuple[int, int] | None) -> Opener:
    def open_camera() -> cv2.VideoCapture:
        cap = cv2.VideoCapture(index)
        if cap.isOpened() and res is not None:  # ask the camera for the size, resize if it ignores us
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, res[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, res[1])
        return cap

    return open_camera


STALL_TIMEOUT_S = 5.0  # `ovdoc run --stall-timeout`: OpenCV's own default is ~30 s
OPEN_TIMEOUT_MIN_S = 10.0  # connecting may legitimately take longer than a stall (RTSP handshakes)


def network_opener(url: str, stall_timeout_s: float | None = STALL_TIMEOUT_S) -> Opener:
    """A stream URL opened with FFmpeg's timeouts: a read that gets nothing for `stall_timeout_s` fails
    (the reader then reconnects with backoff), instead of hanging for OpenCV's ~30 s default."""
    if stall_timeout_s is None:
        return lambda: cv2.VideoCapture(url)
    read_ms = int(round(stall_timeout_s * 1000))
    open_ms = int(round(max(stall_timeout_s, OPEN_TIMEOUT_MIN_S) * 1000))
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_ms]
    return lambda: cv2.VideoCapture(url, cv2.CAP_ANY, params)


def open_source(
    text: str, *, res: tuple[int, int] | None = None, stall_timeout_s: float | None = STALL_TIMEOUT_S
) -> FrameSource:
    """'0' -> camera, 'rtsp://...' -> network stream, a folder -> images, a file -> video; opened.

    `stall_timeout_s` applies to network streams: no frame for that long counts as a lost stream.
    """
    text = str(text).strip()
    if text.isdigit():
        source: FrameSource = CaptureSource(
            camera_opener(int(text), res), f"camera {text}", live=True, res=res, what="camera"
        )
        try:
            source.open()
        except OvdocError as exc:
            raise OvdocError(
                f"cannot open camera {text} (not connected, busy, or no permission); "
                "try another --source index"
            ) from exc
        return source
    if "://" in text:
        source = CaptureSource(
            network_opener(text, stall_timeout_s), text, live=True, res=res, what="stream"
        )
        try:
            source.open()
        except OvdocError as exc:
            raise OvdocError(f"cannot open stream {text} (unreachable, or a codec OpenCV lacks)") from exc
        return source
    path = Path(text).expanduser()
    if path.is_dir():
        source = ImageFolderSource(path, res)
        source.open()
        return source
    if path.is_file():
        if is_image_file(path):
            source = ImageFolderSource(path, res)
            source.open()
            return source
        source = CaptureSource(
            lambda: cv2.VideoCapture(str(path)), str(path), live=False, res=res, what="video"
        )
        with native_stderr_silenced():  # OpenCV's AVI reader prints while probing a corrupt file
            opened = source._open_once()
        if not opened:
            raise OvdocError(f"cannot open video {path} (not a video, corrupt, or a codec OpenCV lacks)")
        return source
    raise OvdocError(
        f"source not found: {text} (give a camera index, a video file, an image folder or a "
        "stream URL such as rtsp://host/path)"
    )
