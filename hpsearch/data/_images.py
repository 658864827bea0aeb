"""Image datasets for the image trainer: scikit-learn's digits, or a folder per class.

Images are kept as one float32 array ``(N, C, H, W)`` scaled to [0, 1]
(digits: value / 16; files: value / 255), labels as int64 indices into the
sorted class names. Splits are seeded and stratified, like the text splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.data._splits import Splits

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "IMAGE_DATASETS",
    "IMAGE_SUFFIXES",
    "ImageDataError",
    "ImageSet",
    "ImageSplits",
    "load_image_dataset",
    "split_images",
]

#: File suffixes read from a class folder (through Pillow).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})


class ImageDataError(ValueError):
    """A dataset setting cannot be used; ``field`` is the ``trainer.<field>`` to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ImageSet:
    """Images ``(N, C, H, W)`` float32 in [0, 1], int64 labels and the class names."""

    images: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    def subset(self, indices: Any) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices], self.label_names)


def _read_digits(**_: Any) -> ImageSet:
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    names = tuple(str(n) for n in bunch.target_names)
    return ImageSet(images, bunch.target.astype(np.int64), names)


#: Built-in dataset names -> reader.
IMAGE_DATASETS = {"digits": _read_digits}


def _class_files(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[int]]:
    """``(class folder names, (image file, class index) pairs, indices of classes with images)``."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[tuple[Path, int]] = []
    for index, name in enumerate(classes):
        found = sorted(f for f in (root / name).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        files.extend((f, index) for f in found)
    used = sorted({label for _, label in files})
    if len(used) < 2:
        raise ImageDataError(
            "dataset",
            f"{str(root)!r} must hold one sub-folder per class with PNG/JPEG files in at least "
            f"2 of them; found {len(used)} class folder(s) with images",
        )
    return classes, files, used


def _open_images(files: list[tuple[Path, int]]) -> list[Any]:
    """Every image decoded into memory (PIL images), in ``files`` order."""
    from PIL import Image

    opened: list[Any] = []
    for path, _ in files:
        try:
            with Image.open(path) as img:
                img.load()
                opened.append(img.copy())
        except OSError as err:
            raise ImageDataError("dataset", f"cannot read image {str(path)!r}: {err}") from err
    return opened


def _common_size(opened: list[Any], root: Path) -> tuple[int, int]:
    """``(height, width)`` shared by all images; refuses mixed sizes (set ``image_size``)."""
    sizes = {img.size for img in opened}  # PIL: (width, height)
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
        raise ImageDataError(
            "image_size",
            f"images in {str(root)!r} have different sizes ({shown}, ...); "
            "set trainer.image_size: [height, width] to resize them",
        )
    ((w, h),) = sizes
    return (h, w)


def _to_array(img: Any, channels: int, height: int, width: int) -> Any:
    """``(C, H, W)`` float32 in [0, 1], converted to ``channels`` and resized when needed."""
    import numpy as np
    from PIL import Image

    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _read_folder(root: Path, *, image_size: tuple[int, int] | None, channels: int | None) -> ImageSet:
    """An image folder (one sub-folder per class) as an :class:`ImageSet`."""
    import numpy as np

    try:
        import PIL  # noqa: F401
    except ImportError as err:  # pragma: no cover - pillow is in the image extra
        raise ImageDataError("dataset", "reading an image folder needs Pillow: pip install -e '.[image]'") from err

    classes, files, used = _class_files(root)
    opened = _open_images(files)
    if channels is None:
        channels = 1 if all(img.mode in {"1", "L", "I", "I;16", "F"} for img in opened) else 3
    height, width = image_size if image_size is not None else _common_size(opened, root)
    arrays = [_to_array(img, channels, height, width) for img in opened]
    # Renumber so that labels are 0..k-1 over the classes that have images.
    remap = {old: new for new, old in enumerate(used)}
    return ImageSet(
        np.stack(arrays).astype(np.float32),
        np.array([remap[label] for _, label in files], dtype=np.int64),
        tuple(classes[i] for i in used),
    )


def load_image_dataset(
    dataset: str,
    *,
    base_dir: Path,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> ImageSet:
    """``digits`` or a folder (relative to ``base_dir``) holding one sub-folder per class.

    Raises:
        ImageDataError: naming the ``trainer.<field>`` to fix.
    """
    if dataset in IMAGE_DATASETS:
        data = IMAGE_DATASETS[dataset]()
        if image_size is not None or (channels is not None and channels != data.shape[0]):
            data = _resize(data, image_size, channels)
        return data
    root = Path(dataset).expanduser()
    if not root.is_absolute():
        root = base_dir / root
    if not root.is_dir():
        raise ImageDataError(
            "dataset",
            f"{dataset!r} is neither a built-in dataset ({', '.join(IMAGE_DATASETS)}) "
            f"nor a folder (looked for {str(root)!r}); use 'digits' or a folder with one "
            "sub-folder of PNG/JPEG images per class",
        )
    return _read_folder(root, image_size=image_size, channels=channels)


def _resize(data: ImageSet, image_size: tuple[int, int] | None, channels: int | None) -> ImageSet:
    import torch
    import torch.nn.functional as F

    images = torch.from_numpy(data.images)
    if channels is not None and channels != images.shape[1]:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        else:
            images = images.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)
    if image_size is not None and tuple(images.shape[-2:]) != tuple(image_size):
        images = F.interpolate(images, size=tuple(image_size), mode="bilinear", align_corners=False)
    return ImageSet(images.contiguous().numpy(), data.labels, data.label_names)


@dataclass(frozen=True)
class ImageSplits(Splits[ImageSet]):
    """Train / validation / optional test images."""


def _stratified(labels: np.ndarray, train_size: float | int, seed: int, field: str) -> tuple[Any, Any]:
    import numpy as np
    from sklearn.model_selection import train_test_split

    try:
        first, second = train_test_split(
            np.arange(len(labels)), train_size=train_size, stratify=labels, random_state=seed
        )
    except ValueError as err:
        raise ImageDataError(field, f"cannot make a stratified split of {len(labels)} images: {err}") from err
    return np.sort(first), np.sort(second)


def split_images(
    data: ImageSet,
    *,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
    max_examples: int | None = None,
) -> ImageSplits:
    """Seeded stratified split; fractions are of the whole (sub)set, test 0 = no test split."""
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ImageDataError(
            "val_fraction",
            "need 0 < val_fraction, 0 <= test_fraction and val_fraction + test_fraction < 1; "
            f"got {val_fraction} and {test_fraction}",
        )
    if max_examples is not None and max_examples < len(data):
        picked, _ = _stratified(data.labels, max_examples, seed, "max_examples")
        data = data.subset(picked)
    test = None
    if test_fraction > 0:
        rest, test_idx = _stratified(data.labels, 1 - test_fraction, seed, "test_fraction")
        test = data.subset(test_idx)
        data = data.subset(rest)
    train_idx, val_idx = _stratified(data.labels, 1 - val_fraction / (1 - test_fraction), seed, "val_fraction")
    return ImageSplits(data.subset(train_idx), data.subset(val_idx), test)
