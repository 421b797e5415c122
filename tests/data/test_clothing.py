"""data/clothing.py on a tiny Clothing1M in the real layout: decoding, the once-shuffled training
list, the loader's passes and the device transform."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from data.clothing import (IMAGE_TRANSFORMS, IMAGENET_MEAN, IMAGENET_STD, ClothingImages, ClothingLoader,
                           DeviceBatchTransform, build_splits, collate_uint8, raise_or_count_bad)
from data.clothing_index import INDEX_FILE_NAME
from tests.clothing_fixture import tiny_with_index
from utils.errors import DatasetError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny set with its index built (unlabelled key dropped; the missing image stays listed)."""
    return tiny_with_index(tmp_path_factory.mktemp("clothing"))


def test_images_decode_resize_and_report_missing_files(tiny):
    dataset = ClothingImages(tiny.root, np.array([tiny.train_keys[0], tiny.missing_image_key]),
                             np.array([4, 3]), image_size=40)
    good, bad = dataset[0], dataset[1]
    assert good.image.dtype == torch.uint8 and good.image.shape == (3, 40, 40) and good.error == ""
    assert bad.image.shape == (3, 40, 40) and tiny.missing_image_key in bad.error
    batch = collate_uint8([good, bad])
    assert batch.images.dtype == torch.uint8 and batch.ok.tolist() == [True, False]
    assert batch.labels.tolist() == [4, 3] and batch.positions.tolist() == [0, 1]
    with pytest.raises(DatasetError, match=f"{tiny.missing_image_key}.*--skip_bad_images"):
        raise_or_count_bad(batch, skip_bad_images=False)
    assert raise_or_count_bad(batch, skip_bad_images=True) == 1

def test_training_list_is_shuffled_once_like_the_official_global_numpy_shuffle(tiny):
    index = np.load(tiny.root / INDEX_FILE_NAME, allow_pickle=True).item()
    splits = build_splits(index, tiny.root, 32, seed=1)
    np.random.seed(1)  # the official code: global generator, first draw
    order = np.arange(len(index["train_labels"]), dtype=int)
    np.random.shuffle(order)
    assert splits.labels[splits.train].tolist() == index["train_labels"][order].tolist()
    assert splits.labels[splits.val].tolist() == index["clean_val_labels"].tolist()
    assert splits.labels[splits.test].tolist() == index["test_labels"].tolist()

def test_loader_runs_planned_passes_in_the_given_order(tiny):
    index = np.load(tiny.root / INDEX_FILE_NAME, allow_pickle=True).item()
    splits = build_splits(index, tiny.root, 16, seed=1)
    loader = ClothingLoader(splits.dataset, num_workers=0, pin_memory=False)
    wanted = splits.val[::-1][:5]
    batches = list(loader.batches(wanted, batch_size=2))
    assert [len(b.labels) for b in batches] == [2, 2, 1]
    assert torch.cat([b.positions for b in batches]).tolist() == wanted.tolist()

def test_device_transform_crops_with_padding_and_normalises():
    transform = DeviceBatchTransform(torch.device("cpu"), image_size=16)
    assert transform.padding == 2  # image_size // 8, as 32 at 256
    images = torch.full((4, 3, 16, 16), 255, dtype=torch.uint8)
    plain = transform.eval(images)
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(plain[0, :, 0, 0], expected)
    augmented = transform.train(images, torch.Generator().manual_seed(0))
    assert augmented.shape == (4, 3, 16, 16)
    zero_padding = (0.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    borders = augmented.permute(0, 2, 3, 1).reshape(-1, 3)
    assert any(torch.allclose(pixel, zero_padding) for pixel in borders)  # some crop reached the padding


def test_pes_transform_is_their_center_crop_and_random_crop_without_padding():
    """PES_Clothing1M.py: Resize((256, 256)) then CenterCrop(224) to evaluate, RandomCrop(224) + flip to
    train, normalised with their mean and std."""
    transform = DeviceBatchTransform(torch.device("cpu"), 256, transform=IMAGE_TRANSFORMS["pes"])
    images = torch.randint(0, 256, (3, 3, 256, 256), dtype=torch.uint8)
    normalize = transforms.Normalize((0.6959, 0.6537, 0.6371), (0.3113, 0.3192, 0.3214))
    theirs = transforms.Compose([transforms.CenterCrop(224), transforms.ToTensor(), normalize])
    for image, ours in zip(images, transform.eval(images)):
        torch.testing.assert_close(ours, theirs(Image.fromarray(image.permute(1, 2, 0).numpy())))
    trained = transform.train(images, torch.Generator().manual_seed(3))
    draws = torch.Generator().manual_seed(3)  # the same draws: 33 × 33 offsets, then the flips
    offsets = torch.randint(0, 33, (3, 2), generator=draws)
    flips = torch.rand(3, generator=draws) < 0.5
    for image, (top, left), flip, ours in zip(images, offsets.tolist(), flips.tolist(), trained):
        crop = image[:, top:top + 224, left:left + 224]
        expected = normalize((crop.flip(2) if flip else crop).float() / 255)
        torch.testing.assert_close(ours, expected)
