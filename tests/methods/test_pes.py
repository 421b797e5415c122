"""PES (utils/methods/pes.py): its rules against its authors' PES_cs.py as docs/method.md describes them
(the renewed layers, which parameters the SGD still updates, the confident set's class weights), its
flags, and exact resumption from a kill in every phase."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import build_model
from models.resnet import make_stage
from tests.runs import TINY_DIGITS, clothing_main, for_method, kill_on_call, kill_then_resume, main_main, uninterrupted
from tests.clothing_fixture import tiny_with_index
from utils.clothing_config import ClothingConfig
from utils.experiments import open_clothing_loop, open_vision_loop
from utils.methods.pes import PES, confident_class_weights, t1_for
from utils.run.config import parse_config
from utils.run.driver import Run, run_training
from utils.train_config import TrainConfig

# 1,294 training examples in batches of 32: 40 full batches an epoch
PES_DIGITS = [*for_method(TINY_DIGITS, "pes"), "--n_epoch", "6", "--T1", "2", "--T2", "1", "--T3", "1",
              "--batch_size", "32", "--output_dir", "run", "--checkpoint_every", "0"]


def test_the_resnets_renew_their_last_stages_and_classifier_in_their_order():
    torch.manual_seed(0)
    model = build_model("pes_resnet18", 10)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    torch.manual_seed(7)
    assert model.renew_last_layers(1) == ["layer4", "linear"]
    torch.manual_seed(7)
    expected_layer4 = make_stage(256, 512, 2, 2)
    for name, value in model.state_dict().items():
        if name.startswith("layer4."):
            assert torch.equal(value, expected_layer4.state_dict()[name.removeprefix("layer4.")])
        elif not name.startswith("linear."):
            assert torch.equal(value, before[name])  # the rest is untouched
    assert model.renew_last_layers(3) == ["layer2", "layer3", "layer4", "linear"]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert build_model("pes_resnet18", 10).conv1.padding == (1, 1)  # PES's stem is padded ...
    assert build_model("resnet18", 10).conv1.padding == (0, 0)      # ... Me-Momentum's is not


def test_lenet_renews_its_last_fully_connected_layers():
    model = build_model("lenet", 10)
    assert model.renew_last_layers(0) == ["classifier.5"]
    assert model.renew_last_layers(1) == ["classifier.3", "classifier.5"]
    assert model.renew_last_layers(5) == ["classifier.1", "classifier.3", "classifier.5"]


def test_class_weights_are_the_mean_nonzero_count_over_each_count():
    weights = confident_class_weights(np.array([0, 0, 0, 1, 3, 3]), 5)
    np.testing.assert_allclose(weights, [2 / 3, 2.0, 0.0, 1.0, 0.0])


def test_t1_defaults_per_dataset():
    config = parse_config(TrainConfig, ["--method", "pes"], "")
    assert (config.n_epoch, config.lr, config.T1, config.T2, config.T3, config.PES_lr) == (200, 0.1, 0, 7, 5, 1e-4)
    assert [t1_for(config, name) for name in ("cifar10", "cifar100", "mnist")] == [25, 30, 25]
    with pytest.raises(Exception, match="--T2 is a flag of --method pes"):
        parse_config(TrainConfig, ["--T2", "3"], "")


class RecordingPES(PES):
    """Keeps the network's weights as they were at the end of epoch T1 (after refining)."""

    after_refine = None

    def finish_epoch(self, phase, sums, lr, started):
        super().finish_epoch(phase, sums, lr, started)
        if phase == "refine":
            RecordingPES.after_refine = {k: v.clone() for k, v in self.trainer.module.state_dict().items()}


def test_after_refining_the_sgd_never_updates_the_renewed_layers_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loops = []

    def open_loop(run):
        loop = open_vision_loop(run)
        loops.append(RecordingPES(loop.task, run, loop.title))
        return loops[-1]

    assert run_training(lambda: parse_config(TrainConfig, PES_DIGITS, ""), open_loop) == 0
    final, refined = loops[0].trainer.module.state_dict(), RecordingPES.after_refine
    assert loops[0].state.frozen == ("classifier.3", "classifier.5")
    for name, value in final.items():
        same = torch.equal(value, refined[name])
        assert same == name.startswith(("classifier.3.", "classifier.5.")), name  # the rest goes on training


@pytest.mark.parametrize("batch", [50, 100, 140, 170])  # warm-up, first refining stage, second, confident set
def test_a_run_killed_in_any_phase_resumes_bit_for_bit(tmp_path, monkeypatch, batch):
    reference = uninterrupted(tmp_path, monkeypatch, PES_DIGITS)
    resumed = kill_then_resume(tmp_path, monkeypatch, PES_DIGITS,
                               lambda patch: kill_on_call(patch, Run, "should_stop", batch))
    assert resumed == reference
    phases = [record.get("phase") for record in reference[1] if record["kind"] == "epoch"]
    assert phases == ["warmup", "warmup", "refine", "refine", "pes", "pes", "pes"]


@pytest.mark.parametrize("batch", [140, 220])  # the second pass of each refining stage (its Adam restored)
def test_a_run_killed_inside_a_refining_stage_resumes_bit_for_bit(tmp_path, monkeypatch, batch):
    args = [*PES_DIGITS, "--T2", "2", "--T3", "2", "--n_epoch", "4"]
    reference = uninterrupted(tmp_path, monkeypatch, args)
    resumed = kill_then_resume(tmp_path, monkeypatch, args, lambda patch: kill_on_call(patch, Run, "should_stop", batch))
    assert resumed == reference
    result, metrics = reference
    epochs = [record for record in metrics if record["kind"] == "epoch"]
    assert [record.get("refine_pass") for record in epochs if record["phase"] == "refine"] == [1, 2, 3, 4]
    assert result["epochs"] == len(epochs) == 2 + 4 + 1  # the last refining pass is epoch T1's record


def test_settings_pes_cannot_run_are_refused():
    for flags, message in ((["--data_percent", "1"], "leaves no validation set"),
                           (["--predict_clean"], "--predict_clean has no effect with --method pes"),
                           (["--PES_lr", "0"], "--PES_lr must be positive")):
        with pytest.raises(Exception, match=message):
            parse_config(TrainConfig, ["--method", "pes", *flags], "")


def test_each_entry_point_refuses_the_other_ones_pes_flags_and_clothing_runs_in_one_process(monkeypatch, tmp_path):
    with pytest.raises(Exception, match="--num_networks has no effect with --method pes in main.py"):
        parse_config(TrainConfig, ["--method", "pes", "--num_networks", "1"], "")
    clothing = ["--method", "pes", "--data_root", str(tmp_path)]
    with pytest.raises(Exception, match="--T3 has no effect with --method pes in Clothing.py"):
        parse_config(ClothingConfig, [*clothing, "--T3", "2"], "")
    config = parse_config(ClothingConfig, clothing, "")  # PES_Clothing1M.py's defaults
    assert (config.lr, config.weight_decay, config.batch_size, config.n_epoch, config.T1, config.T2, config.PES_lr,
            config.num_iters_epoch, config.num_networks) == (0.005, 1e-3, 64, 5, 3, 7, 5e-6, 10, 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(Exception, match="run Clothing.py without torchrun"):
        parse_config(ClothingConfig, clothing, "")


def test_on_clothing1m_the_sgd_never_holds_the_renewed_classifier(tmp_path, monkeypatch):
    tiny = tiny_with_index(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    loops = []

    def open_loop(run):
        loops.append(open_clothing_loop(run))
        return loops[-1]

    args = ["--data_root", str(tiny.root), "--arch", "resnet18", "--image_size", "40", "--no_pretrain",
            "--num_workers", "0", "--batch_size", "8", "--eval_batch_size", "16", "--no_progress", "--skip_bad_images",
            "--method", "pes",
            "--n_epoch", "2", "--T1", "1", "--T2", "1", "--num_iters_epoch", "2", "--num_networks", "1",
            "--output_dir", "run", "--checkpoint_every", "0"]
    assert run_training(lambda: parse_config(ClothingConfig, args, ""), open_loop, distributed=True) == 0
    loop = loops[0]
    held = {id(p) for group in loop.trainer.optimizer.param_groups for p in group["params"]}
    model = loop.trainer.module
    assert not any(id(p) in held for p in model.fc.parameters())
    assert all(id(p) in held for name, p in model.named_parameters() if not name.startswith("fc."))
    assert [r["network"] for r in loop.state.rounds] == [1]
    assert loop.state.rounds[0]["confident_size"] == len(loop.state.train_positions)


def test_settings_under_which_nothing_trains_are_refused_before_the_run_folder_is_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for method in ("pes", "pes_semi"):
        assert main_main([*for_method(TINY_DIGITS, method), "--batch_size", "5000", "--output_dir", method]) == 2
        assert not (tmp_path / method).exists()
    tiny = tiny_with_index(tmp_path / "data")  # 54 training images: 6 batches of 8, 5 // 10 per chunk
    args = ["--data_root", str(tiny.root), "--arch", "resnet18", "--image_size", "40", "--no_pretrain", "--num_workers",
            "0", "--batch_size", "8", "--no_progress", "--method", "pes", "--output_dir", "clothing"]
    assert clothing_main(args) == 2
    assert not (tmp_path / "clothing").exists()
