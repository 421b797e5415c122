"""utils/clothing_config.py: Clothing.py's official flags, defaults and checks."""
from __future__ import annotations

from pathlib import Path

import pytest

from utils.clothing_config import ClothingConfig
from utils.errors import UserError
from utils.run.config import parse_config


def test_official_flags_and_the_inverted_pretrain_flag():
    config = parse_config(ClothingConfig, [], "x")
    assert (config.seed, config.lr, config.weight_decay, config.batch_size, config.num_classes) == (
        1, 0.005, 1e-3, 32, 14)
    assert (config.beta, config.n_epoch, config.max_inner_loop, config.max_outer_loop) == (0.45, 5, 6, 3)
    assert (config.model_dir, config.data_root) == ("model", "data/Clothing1M_Official/")
    assert config.use_pretrained and config.run_dir == Path("runs/clothing1m-seed1")
    assert not parse_config(ClothingConfig, ["--pretrain"], "x").use_pretrained  # official store_false
    assert not parse_config(ClothingConfig, ["--no_pretrain"], "x").use_pretrained
    with pytest.raises(UserError, match="--beta"):
        parse_config(ClothingConfig, ["--beta", "2"], "x")
