"""Images stay as stored and become model inputs batch by batch (shared/data/transforms.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedaegis.client.site import augmented
from fedaegis.shared.data import load_image_folder, load_site_data
from fedaegis.shared.data.sources import embedded_path
from fedaegis.shared.data.transforms import choose_image_size, resize_keep_aspect
from fedaegis.shared.data.types import LazyImages


def test_embedded_default_is_kept_as_bytes_and_gives_the_same_inputs():
    data = load_site_data("embedded:pneumoniamnist", split="train", image_size=(28, 28))
    raw = np.load(embedded_path("pneumoniamnist"))["train_images"]
    eager = torch.from_numpy(raw.astype(np.float32) / np.float32(255.0))[:, None]  # what was kept before
    assert isinstance(data.images, LazyImages) and data.images.stored.dtype == torch.uint8
    assert data.images.shape == eager.shape and data.images.dtype == torch.float32
    idx = torch.tensor([5, 0, 4000])
    assert torch.equal(data.images[idx], eager[idx])  # bit for bit: the default run's figures stay
    assert torch.equal(data.images[:, 0][3], eager[3, 0]) and torch.equal(data.images[7], eager[7])
    sub = data.subset(idx)
    assert isinstance(sub.images, LazyImages) and sub.images.stored.shape == (3, 1, 28, 28)
    assert torch.equal(torch.cat(list(sub.images.split(2))), eager[idx])


def test_a_larger_size_is_made_per_batch_never_held():
    data = load_site_data("embedded:pneumoniamnist", split="test", image_size=(224, 224), channels=3)
    assert data.images.shape == (624, 3, 224, 224) and data.images.stored.shape == (624, 1, 28, 28)
    batch = data.images[:4]
    assert batch.shape == (4, 3, 224, 224) and 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0


def test_resize_keeps_the_aspect_ratio_and_pads():
    wide = torch.zeros(1, 1, 50, 100)
    wide[..., 10:40, 20:80] = 1.0  # a bright rectangle, 30 x 60
    out = resize_keep_aspect(wide, (28, 28))
    assert out.shape == (1, 1, 28, 28)
    rows = (out[0, 0] > 0.5).any(1).nonzero().flatten()
    cols = (out[0, 0] > 0.5).any(0).nonzero().flatten()
    height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    assert abs(width / height - 2.0) < 0.25  # not squashed to a square
    assert float(out[0, 0, :6].max()) == 0.0 and float(out[0, 0, -6:].max()) == 0.0  # padded above and below


@pytest.mark.parametrize(("sides", "dims", "size"), [
    ([28, 28, 28], 2, 28), ([1024, 1024, 600], 2, 224), ([100, 140, 90], 2, 64), ([150, 200, 130], 2, 128),
    ([16, 20], 2, 28), ([64, 64], 3, 64), ([512, 512], 3, 64), ([28], 3, 28)])
def test_image_size_rule(sides, dims, size):
    assert choose_image_size(sides, dims) == size


def test_a_folder_of_real_radiographs_chooses_224_and_keeps_their_shape(tmp_path: Path, shared_data):
    for name in ("test1.dcm", "test2.dcm"):
        (tmp_path / "0").mkdir(exist_ok=True)
        (tmp_path / "0" / name).write_bytes((shared_data / "dicom" / "nih_cxr" / name).read_bytes())
    photo = (np.random.default_rng(0).random((60, 120)) * 255).astype(np.uint8)
    (tmp_path / "1").mkdir()
    Image.fromarray(photo).save(tmp_path / "1" / "wide.png")
    data = load_image_folder(tmp_path, image_size=(28, 28))
    assert data.native_sides == (1024, 1024, 120)
    assert choose_image_size(data.native_sides) == 224
    wide = data.images[2, 0]
    assert float(wide[:6].abs().max()) == 0.0 and float(wide[10:18].mean()) > 0.2  # 2:1 photo padded, not squashed


def test_augmentation_is_training_only_and_seeded():
    data = load_site_data("embedded:pneumoniamnist", split="test", image_size=(28, 28)).subset(torch.arange(64))
    a, b = augmented(data, seed=3), augmented(data, seed=3)
    xa, xb = a.images[:64], b.images[:64]
    assert torch.equal(xa, xb)  # the same seed, the same batches
    assert not torch.equal(xa, data.images[:64]) and xa.shape == data.images[:64].shape
    assert torch.equal(data.images[:64], data.subset(torch.arange(64)).images[:64])  # the source is untouched
