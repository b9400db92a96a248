"""The one input grammar for images: what a user types for `fit`, `eval`, `train`, `bench` and `convert`.

Sources (unlabelled: `open_unlabelled` / `load_unlabelled`; labelled: `load_labelled`):
  PATH                          an image folder (recursive) / a folder with one subfolder per class
  FILE, 'GLOB', VIDEO           image files, a glob ('good/*.png'), every frame of a video (unlabelled)
  PATH.npz                      arrays `x` (NHWC or NHW uint8, RGB) and `y` (integer labels)
  fashion-mnist:CLASS[,CLASS]   Fashion-MNIST training images of those classes (name or index)
  fashion-mnist:-CLASS[,-CLASS] every class except those (a reference set); `fashion-mnist:*` = all
  fashion-mnist-test:...        the same from the test split
  cifar10 / cifar10:CLASSES     CIFAR-10 training set (keras.datasets, downloads once)
Fashion-MNIST comes from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) when
present, so training works offline. No TensorFlow at import: `ovdoc eval` uses this module too.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ovdoc.errors import OvdocError
from ovdoc.log import get_logger
from ovdoc.runtime.images import (
    count_hint,
    expand_sources,
    is_video_file,
    iter_images,
    iter_video_frames,
    read_image,
    scan_folder,
)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "tshirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_ALIASES = {
    "t-shirt": "tshirt",
    "top": "tshirt",
    "t_shirt": "tshirt",
    "ankle-boot": "ankle_boot",
    "ankleboot": "ankle_boot",
    "boot": "ankle_boot",
    "car": "automobile",
}
DATASETS = ("fashion-mnist", "fashion-mnist-test", "cifar10", "cifar10-test")
SPEC_HELP = (
    "a folder, a .npz (x, y), or fashion-mnist[-test]:CLASS[,CLASS] / :-CLASS,... (all but) / :* , "
    "cifar10[-test][:CLASSES]"
)


@dataclass
class Images:
    """Images (a list of BGR/grey uint8 arrays or one uint8 array) with optional integer labels."""

    images: list | np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...] = ()
    source: str = ""

    def __len__(self) -> int:
        return len(self.images)


def is_dataset_spec(text: str) -> bool:
    return text.split(":", 1)[0].lower() in DATASETS and not Path(text).exists()


# --- named data sets ---------------------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise OvdocError(f"cannot read {path}: {exc}") from exc
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N); Debian's copy if installed, else keras.datasets (online)."""
    prefix = "train" if split == "train" else "t10k"
    images = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    labels = FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if images.is_file() and labels.is_file():
        return _read_idx(images), _read_idx(labels).astype(np.int64)
    from ovdoc.runtime.host_extras import host_module

    return host_module("downloads").fashion_mnist(split)


def load_cifar10(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 through keras.datasets (downloads once; host side): a board passes a .npz instead."""
    from ovdoc.runtime.host_extras import host_module

    return host_module("downloads").cifar10(split)


def _class_index(name: str, classes: tuple[str, ...], dataset: str) -> int:
    key = name.strip().lower().replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key.isdigit() and int(key) < len(classes):
        return int(key)
    if key in classes:
        return classes.index(key)
    raise OvdocError(
        f"unknown {dataset} class {name!r}: use one of {', '.join(classes)} or 0-{len(classes) - 1}"
    )


def select_classes(selector: str, classes: tuple[str, ...], dataset: str) -> list[int]:
    """`sneaker,bag` -> those; `-sneaker,-ankle_boot` -> all but those; `*` or empty -> all."""
    parts = [p.strip() for p in selector.split(",") if p.strip()]
    if not parts or parts == ["*"]:
        return list(range(len(classes)))
    negative = [p.startswith("-") for p in parts]
    if any(negative) and not all(negative):
        raise OvdocError(
            f"{dataset}:{selector}: list classes to keep, or prefix every one with '-' to drop it"
        )
    if all(negative):
        drop = {_class_index(p[1:], classes, dataset) for p in parts}
        return [i for i in range(len(classes)) if i not in drop]
    return sorted({_class_index(p, classes, dataset) for p in parts})


def load_dataset_spec(text: str) -> Images:
    name, _, selector = text.partition(":")
    name = name.lower()
    if name.startswith("fashion-mnist"):
        x, y = load_fashion_mnist("test" if name.endswith("-test") else "train")
        classes = FASHION_MNIST_CLASSES
    elif name.startswith("cifar10"):
        x, y = load_cifar10("test" if name.endswith("-test") else "train")
        classes = CIFAR10_CLASSES
    else:
        raise OvdocError(f"unknown data set {text!r}: expected {SPEC_HELP}")
    keep = select_classes(selector, classes, name)
    mask = np.isin(y, keep)
    return Images(x[mask], y[mask], classes, text)


# --- files ---------------------------------------------------------------------------------------------
def load_npz(path: Path, *, labelled: bool = True) -> Images:
    """`x` (uint8 N x H x W [x 3], RGB) and `y` (labels; optional for unlabelled use) from a .npz."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data or (labelled and "y" not in data):
                raise OvdocError(f"{path} must hold arrays 'x' (images) and 'y' (labels)")
            x = data["x"]
            y = data["y"].reshape(-1).astype(np.int64) if "y" in data else None
            names = tuple(str(c) for c in data["classes"]) if "classes" in data else ()
    except (OSError, ValueError) as exc:
        raise OvdocError(f"cannot read {path}: {str(exc)[:150]}") from exc
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (y is not None and len(x) != len(y)):
        raise OvdocError(f"{path}: x must be uint8 N x H x W (x 3) with one label per image in y")
    if x.ndim == 4:
        x = x[..., ::-1].copy()  # stored RGB (like keras.datasets) -> BGR
    if y is None:
        return Images(x, None, (), str(path))
    return Images(x, y, names if len(names) else tuple(str(c) for c in np.unique(y)), str(path))


def load_class_folders(path: Path) -> Images:
    """A folder with one subfolder of images per class (the labelled layout of most data sets)."""
    if not path.is_dir():
        raise OvdocError(f"not found: {path}" if not path.exists() else f"{path} is not a folder")
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and scan_folder(d))
    images: list[np.ndarray] = []
    labels: list[int] = []
    for index, sub in enumerate(subdirs):
        found = [read_image(f) for f in scan_folder(sub)]
        images.extend(found)
        labels.extend([index] * len(found))
    return Images(images, np.asarray(labels, np.int64), tuple(d.name for d in subdirs), str(path))


# --- the one grammar for unlabelled images: `ovdoc fit`, `eval`, `train --target`, bench, quantize ---------
# `ovdoc fit`: a stray unreadable file among many is skipped with a warning; more than this share of the
# image files unreadable means a wrong folder or a broken copy, not a stray file, and fails the command.
MAX_UNREADABLE_SHARE = 0.10
UNREADABLE_NAMED = 3  # file names a warning lists before "and N more"


@dataclass
class ImageStream:
    """Images read lazily (files, videos) or from memory (data sets, .npz), in the order given.

    `total` is known up front where it can be (for progress bars), None when a video hides it;
    `names` are the sources as the user gave them (a bundle records them). With `skip_unreadable`,
    `report` fills in as the images are read: image files read, the unreadable ones skipped, and for
    every image yielded a key (kind, group) saying where it came from - ("file", its folder) or
    ("frame", its video or array) - which calibration uses to hold out whole groups.
    """

    images: Iterator[np.ndarray]
    total: int | None
    names: list[str]
    report: dict = field(default_factory=dict)


def unreadable_note(files: list[str], attempted: int) -> str:
    """'2 of 954 image files could not be read and were skipped: a.jpg, b.jpg' (first few named)."""
    named = ", ".join(files[:UNREADABLE_NAMED])
    more = f" and {len(files) - UNREADABLE_NAMED} more" if len(files) > UNREADABLE_NAMED else ""
    return f"{len(files)} of {attempted} image files could not be read (corrupt or not images): {named}{more}"


def _as_items(sources: str | Path | Iterable[str | Path]) -> list[str | Path]:
    items = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not items:
        raise OvdocError("no images given")
    return items


def _in_memory(item: str | Path) -> Images | None:
    """A data-set spec or a .npz as Images; None for paths, folders, globs and videos."""
    text = str(item)
    path = Path(text)
    if is_dataset_spec(text):
        return load_dataset_spec(text)
    if path.suffix.lower() == ".npz" and path.is_file():
        return load_npz(path, labelled=False)
    if ":" in text and not path.exists() and "://" not in text:
        raise OvdocError(f"unknown data set {text!r}: expected {SPEC_HELP}")
    return None


def open_unlabelled(
    sources: str | Path | Iterable[str | Path], *, video_every: int = 1, skip_unreadable: bool = False,
    decode: bool = True,
) -> ImageStream:
    """Folders (recursive), globs, image and video files, .npz files and data-set specs -> one stream.

    Every source is checked before the first image is read, so a typo is one clear line before any
    model is compiled; files and video frames are then decoded one at a time (a long video never has
    to fit in memory). `skip_unreadable`: an image file that cannot be decoded is skipped and named in
    one warning at the end (one bad file among 954 must not abort `ovdoc fit`); the stream fails when
    no image file, or more than MAX_UNREADABLE_SHARE of them, could be read.
    `decode=False` (with `skip_unreadable`): image files are yielded as their `Path`, to be decoded where
    the features are computed (a cluster's workers); whoever decodes them reports the unreadable ones
    through `drop_unreadable`. Video frames and arrays are still yielded as arrays.
    """
    items = _as_items(sources)
    parts: list[Images | list[Path]] = []
    for item in items:
        data = _in_memory(item)
        if data is not None and len(data) == 0:
            raise OvdocError(f"{item} holds no images")
        parts.append(data if data is not None else expand_sources(item))
    total: int | None = 0
    for part in parts:
        n = len(part) if isinstance(part, Images) else count_hint(part)
        total = None if total is None or n is None else total + n

    report: dict = {"keys": []} if skip_unreadable else {}

    def generate() -> Iterator[np.ndarray]:
        for part, item in zip(parts, items, strict=True):
            if isinstance(part, Images):
                if skip_unreadable:  # a data set or .npz: one sequence, in its order
                    report["keys"].extend([("frame", f"array:{item}")] * len(part.images))
                    report.setdefault("paths", []).extend([None] * len(part.images))
                yield from part.images
            elif not skip_unreadable:
                yield from iter_images(part, video_every=video_every)
            else:
                yield from _tolerant(part, video_every, report, decode)
        if skip_unreadable:
            _check_unreadable(report)

    return ImageStream(generate(), total, [str(i) for i in items], report)


def _tolerant(paths: list[Path], video_every: int, report: dict,
              decode: bool = True) -> Iterator[np.ndarray | Path]:
    """Images of `paths`, skipping (and recording in `report`) image files that cannot be decoded."""
    report.setdefault("image_files", 0)
    report.setdefault("unreadable", [])
    keys = report.setdefault("keys", [])
    files = report.setdefault("paths", [])  # each image's file (None for a video frame): --groups pattern
    for path in paths:
        if is_video_file(path):
            for frame in iter_video_frames(path, every=video_every):
                keys.append(("frame", str(path)))
                files.append(None)
                yield frame
            continue
        report["image_files"] += 1
        if not decode:
            keys.append(("file", str(path.parent)))
            yield path
            continue
        try:
            image = read_image(path)
        except OvdocError:
            report["unreadable"].append(str(path))
            continue
        keys.append(("file", str(path.parent)))
        files.append(str(path))
        yield image


def drop_unreadable(report: dict, skipped: list[tuple[int, str]]) -> None:
    """Files decoded elsewhere (`decode=False`) that turned out unreadable: forget their group keys,
    record them, and apply the same limits as when they are skipped while reading here."""
    gone = {position for position, _ in skipped}
    report["keys"] = [key for i, key in enumerate(report.get("keys", [])) if i not in gone]
    report.setdefault("unreadable", []).extend(name for _, name in skipped)
    _check_unreadable(report)


def _check_unreadable(report: dict) -> None:
    bad, attempted = report.get("unreadable", []), report.get("image_files", 0)
    if not bad:
        return
    note = unreadable_note(bad, attempted)
    if len(bad) == attempted:
        raise OvdocError(f"none of the normal images could be read: {note}")
    if len(bad) > MAX_UNREADABLE_SHARE * attempted:
        raise OvdocError(
            f"{note}; more than {MAX_UNREADABLE_SHARE:.0%} unreadable looks like a wrong folder or a "
            "broken copy: fix or remove them"
        )
    get_logger(__name__).warning(f"warning: {note}; skipped")


def load_unlabelled(sources: str | Path | Iterable[str | Path]) -> Images:
    """Target / normal / anomalous images in memory (see `open_unlabelled` for what a source may be).

    One data set or .npz stays one uint8 array (cheap to index); anything else is a list of images.
    """
    items = _as_items(sources)
    if len(items) == 1 and (data := _in_memory(items[0])) is not None:
        images = data.images
    else:
        images = list(open_unlabelled(items).images)
    if len(images) == 0:
        raise OvdocError(f"{', '.join(str(i) for i in items)} holds no images")
    return Images(images, None, (), ", ".join(str(i) for i in items))


def load_labelled(text: str) -> Images:
    """A reference (multi-class) set; it must have at least two classes to teach descriptiveness."""
    path = Path(text)
    if is_dataset_spec(text):
        data = load_dataset_spec(text)
    elif path.suffix.lower() == ".npz":
        if not path.is_file():
            raise OvdocError(f"not found: {path}")
        data = load_npz(path)
    elif path.is_dir():
        data = load_class_folders(path)
    elif text.lower() in ("cifar10", "cifar-10"):
        data = load_dataset_spec("cifar10")
    elif not path.exists():
        if ":" in text:
            raise OvdocError(f"unknown data set {text!r}: expected {SPEC_HELP}")
        raise OvdocError(f"reference set not found: {text} (expected {SPEC_HELP})")
    else:
        raise OvdocError(
            f"{text}: a reference set is a folder of class subfolders, a .npz or a data-set spec"
        )
    n_classes = len(np.unique(data.labels)) if data.labels is not None and len(data.labels) else 0
    if n_classes < 2:
        raise OvdocError(
            f"reference set {text} has {n_classes} class{'es' if n_classes != 1 else ''}; "
            "DOC needs at least 2 "
            "(a folder with one subfolder per class, or e.g. fashion-mnist:-sneaker)"
        )
    return data


def to_model_input(images: list | np.ndarray, spec) -> np.ndarray:
    """Prepared NHWC uint8 BGR batch at the model size (grey images become 3-channel)."""
    return (
        spec.prepare_batch(list(images))
        if len(images)
        else np.zeros((0, spec.height, spec.width, 3), np.uint8)
    )
