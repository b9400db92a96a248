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
# The ground-truth mask file formats `eval --masks auto` reads beside an image: X.png for X.jpg, X_mask.png.
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


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


def is_mask_name(path: Path) -> bool:
    """`X_mask.png` (any mask suffix): a mask by its name alone, wherever it lies."""
    return path.suffix.lower() in MASK_SUFFIXES and path.stem.lower().endswith("_mask")


def split_masks(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(images, masks) of a folder scan or glob: a mask is `*_mask.*`, or X.png/.bmp/.tif beside an image X
    of another suffix (magnetic-tile's X.jpg + X.png) - exactly what `eval --masks auto` reads as masks,
    so a black mask is never fitted on or scored as a picture."""
    present = {(p.parent, p.stem): p for p in paths if not is_mask_name(p)}
    by_stem: dict[tuple[Path, str], list[Path]] = {}
    for p in paths:
        by_stem.setdefault((p.parent, p.stem), []).append(p)
    masks: set[Path] = {p for p in paths if is_mask_name(p)}
    for key, group in by_stem.items():
        if len(group) < 2 or key not in present:
            continue
        # the partner image: a non-mask suffix first (.jpg beside .png); among mask suffixes, the first seen
        pictures = [p for p in group if is_image_file(p)]
        others = [p for p in pictures if p.suffix.lower() not in MASK_SUFFIXES] or pictures[:1]
        masks.update(p for p in pictures if p not in others and p.suffix.lower() in MASK_SUFFIXES)
    return [p for p in paths if p not in masks], [p for p in paths if p in masks]


def _without_masks(found: list[Path], where: str, tell: bool) -> list[Path]:
    images, masks = split_masks(found)
    if masks and tell:
        from ovdoc.log import get_logger

        get_logger(__name__).info(
            f"{where}: left out {len(masks)} mask file{'s' if len(masks) != 1 else ''} "
            f"({masks[0].name}: X.png beside X.jpg, or *_mask.*); {len(images)} images remain"
        )
    return images


def expand_sources(paths: str | Path | Iterable[str | Path], *, tell_masks: bool = True) -> list[Path]:
    """Folders (recursive, sorted), globs and files -> concrete image/video files, or one clear error.

    Masks in a folder or glob match are left out (`split_masks`), with one line saying how many unless
    `tell_masks` is False (`eval --masks`, where reading them as masks is the point)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for raw in paths:
        text = str(raw)
        path = Path(text)
        if path.is_dir():
            found = _without_masks(scan_folder(path, videos=True), str(path), tell_masks)
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
            found = _without_masks(found, text, tell_masks) if found else found
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
