"""The device pipeline against torchvision's transforms, and its augmentation statistics."""
import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from data.device_pipeline import DevicePipeline, crop_and_flip, images_to_device

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def test_crop_and_flip_equals_torchvision_for_given_offsets():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [8, 8], [3, 5], [4, 4], [1, 7], [8, 0]])
    flips = torch.tensor([True, False, True, False, True, True])
    out = crop_and_flip(images, offsets, flips)
    for i in range(len(images)):
        expected = TF.crop(TF.pad(images[i], [4]), int(offsets[i, 0]), int(offsets[i, 1]), 32, 32)
        if flips[i]:
            expected = TF.hflip(expected)
        assert torch.equal(out[i], expected)


def test_normalisation_equals_totensor_normalize_after_zero_padding():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pipeline = DevicePipeline(MEAN, STD, True, torch.device("cpu"))
    device_images = images_to_device(image[None], torch.device("cpu"))
    crop = crop_and_flip(device_images, torch.tensor([[0, 8]]), torch.tensor([True]))
    ours = pipeline.normalise(crop)[0]
    reference = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])(
        TF.hflip(TF.crop(TF.pad(Image.fromarray(image), [4]), 0, 8, 32, 32)))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_offsets_uniform_over_9x9_and_flip_rate_half():
    pipeline = DevicePipeline(MEAN, STD, True, torch.device("cpu"))
    n = 81 * 400
    draws = pipeline.draw_epoch(n, torch.Generator().manual_seed(0), shuffle=True, augment=True)
    cells = torch.bincount(draws.offsets[:, 0] * 9 + draws.offsets[:, 1], minlength=81).double()
    assert cells.numel() == 81 and int(cells.min()) > 0
    chi_square = float(((cells - 400) ** 2 / 400).sum())
    assert chi_square < 130  # 80 degrees of freedom: p ≈ 0.0004 for 130
    assert abs(float(draws.flips.double().mean()) - 0.5) < 0.01


def test_every_example_once_per_epoch_and_labels_follow_images():
    pipeline = DevicePipeline((0.5,), (0.5,), False, torch.device("cpu"))
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    labels = torch.arange(10)
    draws = pipeline.draw_epoch(10, torch.Generator().manual_seed(1), shuffle=True, augment=True)
    seen = []
    for batch, batch_labels, index in pipeline.batches(images, labels, 4, draws):
        pixel = (batch[:, 0, 0, 0] * 0.5 + 0.5) * 255
        assert torch.allclose(pixel, batch_labels.float(), atol=1e-3)
        seen += index.tolist()
    assert sorted(seen) == list(range(10)) and seen != list(range(10))


def test_same_generator_seed_same_draws():
    pipeline = DevicePipeline(MEAN, STD, True, torch.device("cpu"))
    a = pipeline.draw_epoch(100, torch.Generator().manual_seed(3), True, True)
    b = pipeline.draw_epoch(100, torch.Generator().manual_seed(3), True, True)
    assert torch.equal(a.order, b.order) and torch.equal(a.offsets, b.offsets)


def test_channels_last_batches_hold_the_same_values():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    standard = DevicePipeline(mean, std, True, torch.device("cpu")).normalise(images)
    channels_last = DevicePipeline(mean, std, True, torch.device("cpu"), channels_last=True).normalise(images)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    assert not standard.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last, standard)


def test_batch_bounds_fold_a_last_batch_of_one_only_when_asked():
    from data.device_pipeline import batch_bounds

    assert batch_bounds(9, 4) == [(0, 4), (4, 8), (8, 9)]
    assert batch_bounds(9, 4, fold_single_last=True) == [(0, 4), (4, 9)]
    assert batch_bounds(10, 4, fold_single_last=True) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(1, 4, fold_single_last=True) == [(0, 1)]
    assert batch_bounds(0, 4) == []
