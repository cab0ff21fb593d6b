"""Datasets as in-memory uint8 tensors, and the reference's augmentation done batch-wise on tensors.

CIFAR-10/100 and SVHN load through torchvision (``download=`` as the user says); Fashion-MNIST from Debian's
``dataset-fashion-mnist`` IDX files when present, else through torchvision; ``digits`` is scikit-learn's bundled 8x8
digits, for the smallest tests. Keeping images as one tensor (at most 50k x 3 x 32 x 32 bytes = 150 MB) lets a search
draw batches with its own seeded generator, so a resumed search sees exactly the batches of an uninterrupted one.

Augmentation (automl/RobustDARTS ``utils._data_transforms_cifar10``, for every dataset): random crop with padding
(4 at 32 px), horizontal flip, normalisation, and Cutout when enabled (16 px at 32 px, always applied: RobustDARTS#3).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rdarts.config import DATASETS
from rdarts.errors import UserError

__all__ = ["DATASETS", "Augment", "DataError", "ImageData", "load_dataset"]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DataError(UserError):
    """A dataset that cannot be found or loaded; the message says where rdarts looked and how to get it."""


@dataclass(frozen=True)
class ImageData:
    """One split: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, n: int | None) -> ImageData:
        if n is None or n >= len(self.labels):
            return self
        return ImageData(self.images[:n], self.labels[:n], self.num_classes, self.mean, self.std)

    def resized(self, size: int | None) -> ImageData:
        if size is None or size == self.image_size:
            return self
        x = F.interpolate(self.images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return ImageData(x.round().clamp(0, 255).to(torch.uint8), self.labels, self.num_classes, self.mean, self.std)


def _stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.float().div(255)
    return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        for candidate in (folder / name, folder / "FashionMNIST" / "raw" / name):
            if candidate.is_file():
                return candidate
    return None


def _fashion_mnist(root: Path | None, train: bool, download: bool) -> ImageData:
    prefix = "train" if train else "t10k"
    folders = [p for p in (root, DEBIAN_FASHION_MNIST) if p is not None]
    for folder in folders:
        imgs, lbls = _find_idx(folder, f"{prefix}-images-idx3-ubyte"), _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
        if imgs and lbls:
            x = torch.from_numpy(_read_idx(imgs).copy()).unsqueeze(1)
            y = torch.from_numpy(_read_idx(lbls).astype(np.int64))
            return ImageData(x, y, 10, (0.2860,), (0.3530,))
    if download and root is not None:
        from torchvision.datasets import FashionMNIST

        ds = FashionMNIST(str(root), train=train, download=True)
        return ImageData(ds.data.unsqueeze(1).clone(), ds.targets.clone(), 10, (0.2860,), (0.3530,))
    looked = ", ".join(str(p) for p in folders)
    raise DataError(f"fashion-mnist: no IDX files found (looked in {looked}); install them with "
                    "'apt-get install dataset-fashion-mnist', or pass --data-root DIR --download to fetch them")


def _digits(train: bool) -> ImageData:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError("digits: scikit-learn is not installed; 'pip install scikit-learn'") from e
    d = load_digits()
    x = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    # A fixed permutation mixes the classes (the file is ordered by writer); the last 297 images are the test split.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    x, y = (x[:1500], y[:1500]) if train else (x[1500:], y[1500:])
    # Stats of the 1500-image train split (test: tests/test_data.py); the std was 0.3704, off by 0.005.
    return ImageData(x, y, 10, (0.3059,), (0.3757,))


def _torchvision(name: str, root: Path | None, train: bool, download: bool) -> ImageData:
    from torchvision import datasets

    if root is None:
        raise DataError(f"{name}: no data root given; pass --data-root DIR (and --download to fetch it there)")
    try:
        if name == "svhn":
            ds = datasets.SVHN(str(root), split="train" if train else "test", download=download)
            x, y, classes = torch.from_numpy(ds.data.copy()), torch.from_numpy(ds.labels.astype(np.int64)), 10
        else:
            cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
            ds = cls(str(root), train=train, download=download)
            x = torch.from_numpy(ds.data.copy()).permute(0, 3, 1, 2).contiguous()
            y, classes = torch.tensor(ds.targets, dtype=torch.int64), (10 if name == "cifar10" else 100)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise DataError(f"{name}: not found under {root} ({e}); pass --download to fetch it there, "
                        "or --data-root to point at a folder that holds it") from None
    mean, std = _KNOWN_STATS.get(name) or _stats(x)
    return ImageData(x, y, classes, mean, std)


_KNOWN_STATS = {
    "cifar10": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def load_dataset(name: str, *, root: str | os.PathLike[str] | None = None, train: bool = True,
                 download: bool = False) -> ImageData:
    """One split of a named dataset.

    Raises:
        DataError: unknown name (lists the valid ones), or the data is not where it was looked for.
    """
    key = name.lower()
    path = Path(root).expanduser() if root is not None else None
    if path is not None and not download and not path.exists():
        raise DataError(f"{key}: data root {path} does not exist; create it and pass --download, or point --data-root "
                        "at the folder that holds the dataset")
    if key == "fashion-mnist":
        return _fashion_mnist(path, train, download)
    if key == "digits":
        return _digits(train)
    if key in ("cifar10", "cifar100", "svhn"):
        return _torchvision(key, path, train, download)
    raise DataError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")


class Augment:
    """Batch-wise crop-with-padding, horizontal flip, normalisation and Cutout on uint8 image batches.

    Args:
        data: Supplies the normalisation statistics and the image size (padding and cutout scale with it:
            4 and 16 px at 32 px).
        cutout: Whether to apply Cutout.
        cutout_length: Side of the Cutout square; ``None`` is half the image side (16 at 32 px).
        augment: Crop and flip (training); normalisation alone otherwise.
    """

    def __init__(self, data: ImageData, *, cutout: bool = False, cutout_length: int | None = None,
                 augment: bool = True):
        size = data.image_size
        self.pad = max(1, round(4 * size / 32))
        self.cutout = cutout
        self.cutout_length = cutout_length if cutout_length is not None else max(1, size // 2)
        self.augment = augment
        self.mean = torch.tensor(data.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = images.float().div_(255)
        n, _, h, w = x.shape
        if self.augment:
            padded = F.pad(x, (self.pad,) * 4)
            dy = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
            rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)  # (N, H)
            cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(x.device)  # (N, W)
            idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
            x = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
            flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if self.cutout:
            cy = torch.randint(0, h, (n,), generator=generator).to(x.device)
            cx = torch.randint(0, w, (n,), generator=generator).to(x.device)
            half = self.cutout_length // 2
            ys, xs = torch.arange(h, device=x.device).view(1, h, 1), torch.arange(w, device=x.device).view(1, 1, w)
            y0, x0 = (cy - half).clamp(0, h).view(n, 1, 1), (cx - half).clamp(0, w).view(n, 1, 1)
            y1, x1 = (cy + half).clamp(0, h).view(n, 1, 1), (cx + half).clamp(0, w).view(n, 1, 1)
            hole = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)  # (N, H, W), as Cutout's clipped square
            x = x.masked_fill(hole.unsqueeze(1), 0.0)
        return x.contiguous()
