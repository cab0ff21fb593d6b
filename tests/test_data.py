"""Offline datasets, their loading errors, and the batch-wise augmentation (crop, flip, normalise, cutout)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rdarts.data as data_mod
from rdarts.data import DATASETS, Augment, DataError, ImageData, load_dataset

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(),
                                   reason=f"{FASHION} is absent (apt-get install dataset-fashion-mnist)")


# ----------------------------------------------------------------------------------------------- loading
def test_digits_loads_offline_with_the_documented_shapes(digits: ImageData) -> None:
    assert digits.images.dtype == torch.uint8 and digits.labels.dtype == torch.int64
    assert digits.images.shape == (1500, 1, 8, 8)
    assert digits.labels.shape == (1500,)
    assert digits.num_classes == 10 and digits.in_channels == 1 and digits.image_size == 8
    assert set(digits.labels.tolist()) == set(range(10))  # shuffled: every class in the train split
    test = load_dataset("digits", train=False)
    assert test.images.shape == (297, 1, 8, 8)  # 1797 images in all


def test_digits_normalisation_stats_match_the_data(digits: ImageData) -> None:
    x = digits.images.float() / 255
    assert digits.mean[0] == pytest.approx(float(x.mean()), abs=2e-3)
    assert digits.std[0] == pytest.approx(float(x.std()), abs=2e-3)


@needs_fashion
def test_fashion_mnist_loads_offline() -> None:
    train = load_dataset("fashion-mnist")
    assert train.images.shape == (60_000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.shape == (60_000,) and train.labels.dtype == torch.int64
    assert set(train.labels.unique().tolist()) == set(range(10))
    x = train.images.float() / 255
    assert train.mean[0] == pytest.approx(float(x.mean()), abs=1e-3)
    assert train.std[0] == pytest.approx(float(x.std()), abs=1e-3)
    test = load_dataset("fashion-mnist", train=False)
    assert test.images.shape == (10_000, 1, 28, 28)


def test_subset_and_resize(digits: ImageData) -> None:
    small = digits.subset(10).resized(16)
    assert small.images.shape == (10, 1, 16, 16) and small.images.dtype == torch.uint8
    assert torch.equal(small.labels, digits.labels[:10])
    assert digits.subset(None) is digits and digits.resized(8) is digits


def test_unknown_dataset_lists_the_valid_ones() -> None:
    with pytest.raises(DataError, match="imagenet") as info:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(info.value)


def test_missing_data_root_says_where_and_how(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", root=root)
    assert str(root) in str(info.value)
    assert "--download" in str(info.value) and "--data-root" in str(info.value)


def test_missing_cifar10_files_say_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", root=tmp_path)  # exists, but holds nothing
    assert str(tmp_path) in str(info.value)
    assert "--download" in str(info.value)


def test_cifar10_without_a_root_asks_for_one() -> None:
    with pytest.raises(DataError, match="--data-root"):
        load_dataset("cifar10")


def test_missing_fashion_mnist_says_where_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and str(tmp_path / "debian") in message
    assert "apt-get install dataset-fashion-mnist" in message and "--download" in message


# ----------------------------------------------------------------------------------------------- augmentation
def _data(size: int, channels: int = 1) -> ImageData:
    images = torch.randint(0, 256, (6, channels, size, size), dtype=torch.uint8)
    return ImageData(images, torch.zeros(6, dtype=torch.int64), 10, (0.25,) * channels, (0.5,) * channels)


def test_normalisation_only_without_augment() -> None:
    d = _data(8, channels=3)
    out = Augment(d, augment=False)(d.images, torch.Generator().manual_seed(0))
    assert torch.allclose(out, (d.images.float() / 255 - 0.25) / 0.5)


def test_crop_and_flip_keep_the_shape_and_are_a_shifted_copy(generator: torch.Generator) -> None:
    d = _data(8, channels=2)
    aug = Augment(d)  # pad = round(4 * 8 / 32) = 1
    assert aug.pad == 1
    out = aug(d.images, generator)
    assert out.shape == d.images.shape and out.dtype == torch.float32
    # Oracle: each output is some (dy, dx) crop of the zero-padded image, maybe flipped, then normalised.
    padded = torch.nn.functional.pad(d.images.float() / 255, (1, 1, 1, 1))
    for i in range(len(out)):
        candidates = []
        for dy in range(3):
            for dx in range(3):
                crop = padded[i, :, dy:dy + 8, dx:dx + 8]
                candidates += [(crop - 0.25) / 0.5, (crop.flip(-1) - 0.25) / 0.5]
        assert any(torch.allclose(out[i], c) for c in candidates), f"image {i} is not a crop/flip of its input"


def test_augment_is_deterministic_per_generator() -> None:
    d = _data(16)
    aug = Augment(d, cutout=True)
    a = aug(d.images, torch.Generator().manual_seed(5))
    b = aug(d.images, torch.Generator().manual_seed(5))
    c = aug(d.images, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(("size", "length"), [(32, 16), (32, 8), (16, 6)])
def test_cutout_zeroes_a_square_of_the_given_side(size: int, length: int) -> None:
    n = 400
    d = ImageData(torch.full((n, 1, size, size), 255, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64), 10,
                  (0.5,), (0.25,))
    out = Augment(d, cutout=True, cutout_length=length, augment=False)(d.images, torch.Generator().manual_seed(0))
    assert torch.allclose(out[out != 0], torch.tensor(2.0))  # the constant image normalises to (1 - .5) / .25
    holes = out[:, 0] == 0  # (N, H, W)
    full = 0
    for hole in holes:
        rows, cols = hole.any(dim=1).nonzero().flatten(), hole.any(dim=0).nonzero().flatten()
        assert len(rows) > 0
        h, w = len(rows), len(cols)
        # one axis-aligned rectangle: its bounding box is all zero and it is clipped to at most length x length
        assert int(hole.sum()) == h * w
        assert rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w
        assert h <= length and w <= length
        inside = rows[0] > 0 and cols[0] > 0 and rows[-1] < size - 1 and cols[-1] < size - 1
        if inside:  # away from the borders the hole is the whole square
            assert (h, w) == (length, length)
            full += 1
    assert full > n // 10  # the unclipped case does occur


def test_default_cutout_length_is_half_the_image() -> None:
    assert Augment(_data(32), cutout=True).cutout_length == 16
    assert Augment(_data(8), cutout=True).cutout_length == 4
