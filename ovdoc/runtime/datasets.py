"""Training and evaluation data from what a user types: folders, .npz files and named data sets.

Specs (one syntax for `ovdoc train`, `ovdoc eval` and the benchmarks):
  PATH                          an image folder (recursive) / a folder with one subfolder per class
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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ovdoc.errors import OvdocError

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
    from ovdoc.errors import require_tensorflow

    require_tensorflow("downloading Fashion-MNIST (or: apt install dataset-fashion-mnist)")
    import keras

    try:
        (xtr, ytr), (xte, yte) = keras.datasets.fashion_mnist.load_data()
    except Exception as exc:
        raise OvdocError(
            f"cannot get Fashion-MNIST (apt install dataset-fashion-mnist works offline): {exc}"
        ) from exc
    return (xtr, ytr.astype(np.int64)) if split == "train" else (xte, yte.astype(np.int64))


def load_cifar10(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    from ovdoc.errors import require_tensorflow

    require_tensorflow("downloading CIFAR-10")
    import keras

    try:
        (xtr, ytr), (xte, yte) = keras.datasets.cifar10.load_data()
    except Exception as exc:
        raise OvdocError(
            f"cannot download CIFAR-10 ({str(exc)[:150]}); pass a .npz with x, y instead"
        ) from exc
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    return x[..., ::-1].copy(), y.reshape(-1).astype(np.int64)  # RGB -> BGR like every other image here


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
def load_npz(path: Path) -> Images:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data or "y" not in data:
                raise OvdocError(f"{path} must hold arrays 'x' (images) and 'y' (labels)")
            x, y = data["x"], data["y"].reshape(-1).astype(np.int64)
            names = tuple(str(c) for c in data["classes"]) if "classes" in data else ()
    except (OSError, ValueError) as exc:
        raise OvdocError(f"cannot read {path}: {str(exc)[:150]}") from exc
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) != len(y):
        raise OvdocError(f"{path}: x must be uint8 N x H x W (x 3) with one label per image in y")
    if x.ndim == 4:
        x = x[..., ::-1].copy()  # stored RGB (like keras.datasets) -> BGR
    return Images(x, y, names if len(names) else tuple(str(c) for c in np.unique(y)), str(path))


def _read_images(files: list[Path]) -> list[np.ndarray]:
    from ovdoc.runtime.images import read_image

    return [read_image(f) for f in files]


def _image_files(folder: Path) -> list[Path]:
    from ovdoc.runtime.images import is_image_file

    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


def load_folder(path: Path) -> Images:
    if not path.is_dir():
        raise OvdocError(f"not found: {path}" if not path.exists() else f"{path} is not a folder")
    files = _image_files(path)
    if not files:
        raise OvdocError(f"no images in folder {path}")
    return Images(_read_images(files), None, (), str(path))


def load_class_folders(path: Path) -> Images:
    """A folder with one subfolder of images per class (the labelled layout of most data sets)."""
    if not path.is_dir():
        raise OvdocError(f"not found: {path}" if not path.exists() else f"{path} is not a folder")
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and _image_files(d))
    images: list[np.ndarray] = []
    labels: list[int] = []
    for index, sub in enumerate(subdirs):
        found = _read_images(_image_files(sub))
        images.extend(found)
        labels.extend([index] * len(found))
    return Images(images, np.asarray(labels, np.int64), tuple(d.name for d in subdirs), str(path))


# --- what the commands call --------------------------------------------------------------------------------
def load_unlabelled(text: str) -> Images:
    """Target / normal / anomalous images: a folder, a single image, a .npz (x) or a data-set spec."""
    path = Path(text)
    if is_dataset_spec(text):
        data = load_dataset_spec(text)
    elif path.suffix.lower() == ".npz" and path.is_file():
        data = load_npz(path)
    elif path.is_file():
        data = Images(_read_images([path]), None, (), text)
    elif ":" in text and not path.exists():
        raise OvdocError(f"unknown data set {text!r}: expected {SPEC_HELP}")
    else:
        data = load_folder(path)
    if len(data) == 0:
        raise OvdocError(f"{text} holds no images")
    return data


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


def write_image_folder(images: list | np.ndarray, folder: Path) -> Path:
    """Write images as PNGs (the runtime reads folders); used to fit bundles on data-set specs."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"{i:06d}.png"), img)
    return folder
