"""Image files on disk: the one suffix list, folder scan, glob/video expansion and image reader.

`expand_sources` turns paths, folders (recursive), globs and video files into an ordered list of concrete
inputs, so an empty folder or a glob that matches nothing is one clear line before any model is compiled.
Data-set specs and .npz arrays are parsed one level up, in `ovdoc.runtime.datasets`, on top of this.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from ovdoc.errors import OvdocError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def is_media_file(path: Path) -> bool:
    return is_image_file(path) or is_video_file(path)


def scan_folder(folder: Path, *, videos: bool = False) -> list[Path]:
    """Image files (and video files with `videos=True`) below `folder`, recursive, sorted."""
    wanted = is_media_file if videos else is_image_file
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and wanted(p))


def expand_sources(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Folders (recursive, sorted), globs and files -> concrete image/video files, or one clear error."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for raw in paths:
        text = str(raw)
        path = Path(text)
        if path.is_dir():
            found = scan_folder(path, videos=True)
            if not found:
                raise OvdocError(f"no images in folder {path} (looked for {', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        elif path.is_file():
            if not is_media_file(path):
                raise OvdocError(f"{path} is neither an image nor a video file")
            out.append(path)
        elif glob.has_magic(text):
            found = sorted(
                Path(p)
                for p in glob.glob(text, recursive=True)
                if Path(p).is_file() and is_media_file(Path(p))
            )
            if not found:
                raise OvdocError(f"no images match {text}")
            out.extend(found)
        else:
            raise OvdocError(f"not found: {path}")
    if not out:
        raise OvdocError("no images given")
    return out


def read_image(path: Path) -> np.ndarray:
    """BGR uint8 image; an unreadable or corrupt file is one clear line."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise OvdocError(f"cannot read image {path} (corrupt or not an image)")
    return image


def iter_video_frames(path: Path, every: int = 1) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OvdocError(f"cannot open video {path} (missing codec or not a video)")
    try:
        index = 0
        produced = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % every == 0:
                produced += 1
                yield frame
            index += 1
        if produced == 0:
            raise OvdocError(f"video {path} has no readable frames")
    finally:
        cap.release()


def iter_images(paths: str | Path | Iterable[str | Path], *, video_every: int = 1) -> Iterator[np.ndarray]:
    """Yield BGR uint8 images from folders, globs, image files and every `video_every`-th video frame."""
    for path in expand_sources(paths):
        if is_video_file(path):
            yield from iter_video_frames(path, every=video_every)
        else:
            yield read_image(path)


def load_images(paths: str | Path | Iterable[str | Path], *, video_every: int = 1) -> list[np.ndarray]:
    return list(iter_images(paths, video_every=video_every))


def count_hint(paths: str | Path | Iterable[str | Path]) -> int | None:
    """How many images `iter_images` will yield (for the progress bar); None when a video hides it."""
    total = 0
    for path in expand_sources(paths):
        if is_video_file(path):
            cap = cv2.VideoCapture(str(path))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            cap.release()
            if n <= 0:
                return None
            total += n
        else:
            total += 1
    return total
