"""The accuracy measures and device choice of utils/engine.py."""
import pytest
import torch

from utils.run.config import parse_config
from utils.engine import EpochStats, select_device, uses_channels_last
from utils.train_config import TrainConfig


def test_epoch_stats_means():
    stats = EpochStats(loss_sum=6.0, correct=3, count=4)
    assert stats.loss == 1.5 and stats.accuracy == 75.0


def test_select_device_cpu_and_override():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in {"cuda", "mps", "cpu"}


def test_channels_last_auto_means_cpu_only():
    assert uses_channels_last("auto", torch.device("cpu"))
    assert not uses_channels_last("auto", torch.device("cuda"))
    assert not uses_channels_last("auto", torch.device("mps"))
    assert uses_channels_last("on", torch.device("cuda")) and not uses_channels_last("off", torch.device("cpu"))
    with pytest.raises(ValueError, match="--channels_last"):
        uses_channels_last("yes", torch.device("cpu"))


@pytest.mark.parametrize("flags, expected", [([], "auto"), (["--channels_last"], "on"),
                                             (["--channels_last", "off"], "off"),
                                             (["--channels_last", "--amp"], "on")])
def test_channels_last_flag(flags, expected):
    assert parse_config(TrainConfig, flags, "test").channels_last == expected


def test_train_one_epoch_matches_the_official_step_order():
    """Zeroing gradients after each step (ours) or before each backward (official) is the same SGD."""
    from models.lenet import LeNet
    from utils.engine import make_sgd, train_one_epoch

    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 1, 28, 28, generator=generator), torch.randint(0, 10, (16,), generator=generator))
               for _ in range(5)]
    torch.manual_seed(0)
    ours, official = LeNet(10), LeNet(10)
    official.load_state_dict(ours.state_dict())
    our_sgd = make_sgd(ours.parameters(), lr=0.1, weight_decay=1e-3, kernels="plain")
    official_sgd = make_sgd(official.parameters(), lr=0.1, weight_decay=1e-3, kernels="plain")
    stats = train_one_epoch(ours, our_sgd, batches)
    official.train()
    for images, labels in batches:
        loss = torch.nn.functional.cross_entropy(official(images), labels)
        official_sgd.zero_grad()
        loss.backward()
        official_sgd.step()
    for mine, theirs in zip(ours.parameters(), official.parameters()):
        assert torch.equal(mine, theirs)
    assert stats.count == 80 and all(parameter.grad is None for parameter in ours.parameters())
