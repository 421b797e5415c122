"""Tests of the Clothing1M pieces (METHOD.md §4): the pure rules, the image pipeline, the pretrained
models, the config, and Clothing.py end to end on CPU (tiny images, resnet18, seconds)."""
from __future__ import annotations

import importlib
import json
import math
import signal
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from data.clothing import (IGNORED_LABEL, IMAGENET_MEAN, IMAGENET_STD, ClothingImages, ClothingLoader,
                           DeviceBatchTransform, build_splits, collate_uint8, raise_or_count_bad)
from data.clothing_index import INDEX_FILE_NAME, build_index, index_to_bytes, read_all_splits
from models.pretrained import build_classifier, hub_cache_file, load_imagenet_state, read_state_dict_file
from tests.clothing_fixture import NUM_CLASSES, make_tiny_clothing1m
from utils.run.checkpoint import load_checkpoint
from utils.clothing_config import ClothingConfig
from utils.clothing_task import ClassWeightedLoss, class_weights
from utils.metrics import per_class_accuracy_precision, per_class_scores
from utils.selection import (checkpoint_for_each_class,
                             examples_by_checkpoint,
                             rebuild_training_set, update_best_checkpoints)
from utils.run.config import parse_config
from utils.run.distributed import init_distributed
from utils.errors import DatasetError, UserError
import utils.run.driver as driver


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions run faster on one thread than on contended ones (other tests may be running)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    """Runs append to logs/results.txt in the working directory (as officially): keep it in tmp."""
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------ the pure rules

def test_class_weights_match_hand_computation():
    # n = [2, 1, 1, 0], v = [1, 1, 2, 4]: mean n = 1, mean v = 2
    weights = class_weights(np.array([2, 1, 1, 0]), np.array([1, 1, 2, 4]))
    assert weights.tolist() == [0.25, 0.5, 1.0, 0.0]  # (1/2)(1/2), (1/1)(1/2), (1/1)(2/2), absent -> 0


def test_per_class_accuracy_precision_and_scores_match_hand_computation():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 0, -1])  # the last image was unreadable: not counted
    acc, precision = per_class_accuracy_precision(predictions, labels, 4)
    # class 0: 2 of 3 right (66.67), predicted 3 times, 2 right (66.67); class 1: 1/2 = 50, 1/2 = 50
    assert acc[:2].tolist() == [66.67, 50.0] and precision[:2].tolist() == [66.67, 50.0]
    assert math.isnan(acc[2]) and math.isnan(precision[2])   # no readable example, never predicted
    assert math.isnan(acc[3]) and math.isnan(precision[3])
    scores = per_class_scores(np.array([50.0, 100.0]), np.array([100.0, 50.0]), beta=0.45)
    assert scores.tolist() == pytest.approx([0.45 * 50 + 0.55 * 100, 0.45 * 100 + 0.55 * 50])  # 77.5, 72.5


def test_best_checkpoint_needs_a_strictly_higher_score_and_nan_never_wins():
    scores, files = update_best_checkpoints(np.zeros(3), [None] * 3, np.array([10.0, 0.0, np.nan]), "a")
    assert files == ["a", None, None] and scores.tolist()[:2] == [10.0, 0.0]
    scores, files = update_best_checkpoints(scores, files, np.array([10.0, 5.0, 1.0]), "b")
    assert files == ["a", "b", "b"]  # a tie keeps the earlier checkpoint


def test_a_class_that_never_scored_falls_back_to_the_latest_checkpoint():
    files, fallback = checkpoint_for_each_class(["a", None, "b"], "latest")
    assert files == ["a", "latest", "b"] and fallback == [1]


def test_rebuild_selects_per_class_with_that_class_checkpoint():
    noisy = np.array([0, 1, 0, 2, 1, 2])
    groups = examples_by_checkpoint(noisy, ["a", "b", "a"])
    assert list(groups) == ["a", "b"]
    assert groups["a"].tolist() == [0, 2, 3, 5] and groups["b"].tolist() == [1, 4]
    # predictions of checkpoint a on 0, 2, 3, 5 and of b on 1, 4, written at the examples' positions
    predictions = np.array([0, 1, 1, 2, 0, -1])
    assert rebuild_training_set(noisy, predictions).tolist() == [0, 1, 3]


def test_class_weighted_loss_is_weighted_cross_entropy_and_ignores_skipped_images():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    weights = torch.tensor([0.5, 1.0, 2.0])
    loss = ClassWeightedLoss(weights, world_size=1)
    assert loss(logits, labels).item() == pytest.approx(nn.CrossEntropyLoss(weight=weights)(logits, labels).item())
    masked = labels.clone()
    masked[:2] = IGNORED_LABEL
    expected = nn.CrossEntropyLoss(weight=weights)(logits[2:], labels[2:]).item()
    assert loss(logits, masked).item() == pytest.approx(expected)
    per_example = nn.functional.cross_entropy(logits, labels, reduction="none") * weights[labels]
    both_calls = (per_example.sum() + per_example[2:].sum()) / (weights[labels].sum() + weights[labels[2:]].sum())
    assert loss.epoch_loss() == pytest.approx(both_calls.item())  # the weighted mean over the epoch


# ------------------------------------------------------------------ data pipeline

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny set with its index built (unlabelled key dropped; the missing image stays listed)."""
    data = make_tiny_clothing1m(tmp_path_factory.mktemp("clothing") / "Clothing1M")
    index = build_index(read_all_splits(data.root, drop_unlabelled=True))
    (data.root / INDEX_FILE_NAME).write_bytes(index_to_bytes(index))
    return data


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


# ------------------------------------------------------------------ models

def test_pretrained_weights_come_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = hub_cache_file("resnet18")
    assert cached.parent == tmp_path / "torch" / "hub" / "checkpoints"
    imagenet = torchvision.models.resnet18(weights=None)
    cached.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), cached)
    state = load_imagenet_state("resnet18")
    model = build_classifier("resnet18", NUM_CLASSES, state)
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight) and model.fc.out_features == NUM_CLASSES


def test_missing_weights_offline_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    with pytest.raises(UserError) as error:
        load_imagenet_state("resnet50")
    message = str(error.value)
    assert str(hub_cache_file("resnet50")) in message and "--weights" in message and "--no_pretrain" in message


def test_weights_file_loads_with_module_prefix_and_wrapper(tmp_path):
    imagenet = build_classifier("resnet18", 1000, None)
    torch.save({"state_dict": {f"module.{k}": v for k, v in imagenet.state_dict().items()}}, tmp_path / "w.pt")
    model = build_classifier("resnet18", NUM_CLASSES, read_state_dict_file(tmp_path / "w.pt"))
    assert torch.equal(model.layer1[0].conv1.weight, imagenet.layer1[0].conv1.weight)
    with pytest.raises(UserError, match="do not fit a torchvision resnet34"):
        build_classifier("resnet34", NUM_CLASSES, read_state_dict_file(tmp_path / "w.pt"))


# ------------------------------------------------------------------ config

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


# ------------------------------------------------------------------ end to end

def tiny_run_flags(tiny, run_dir: Path, *extra: str) -> list[str]:
    return ["--data_root", str(tiny.root), "--arch", "resnet18", "--image_size", "40", "--no_pretrain",
            "--n_epoch", "1", "--max_inner_loop", "2", "--max_outer_loop", "2", "--num_workers", "0",
            "--batch_size", "4", "--eval_batch_size", "16", "--output_dir", str(run_dir),
            "--model_dir", str(run_dir.parent / f"{run_dir.name}-weights"), "--no_progress",
            "--skip_bad_images", *extra]


def run_clothing_main(argv: list[str]) -> int:
    """Clothing.main in this process, leaving the test process's signal handlers as they were."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        return importlib.import_module("Clothing").main(argv)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def comparable(records: list[dict]) -> list[dict]:
    """Metrics without what legitimately differs between runs (timings, file locations)."""
    drop = {"seconds", "weights_file", "checkpoint_of_class"}
    return [{k: v for k, v in record.items() if k not in drop} for record in records]


@pytest.fixture(scope="module")
def finished_run(tiny, tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    run_dir = base / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)  # logs/results.txt goes to the working directory, as officially
        code = run_clothing_main(tiny_run_flags(tiny, run_dir, "--save_rounds"))
    return code, run_dir, base


def test_clothing_py_end_to_end_writes_every_output(finished_run, tiny):
    code, run_dir, base = finished_run
    assert code == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch"] == "resnet18" and config["max_outer_loop"] == 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    rounds = [r for r in records if r["kind"] == "round"]
    assert [(r["outer"], r["inner"], r["epoch"]) for r in epochs] == [(0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 1)]
    assert [(r["outer"], r["inner"]) for r in rounds] == [(0, 0), (0, 1), (1, 0)]  # none after the last round
    first = epochs[0]
    assert first["train_size"] == len(tiny.train_keys) and first["lr"] == 0.005 and first["phase"] == "inner"
    assert len(first["val_class_acc"]) == len(first["val_class_precision"]) == len(first["val_class_score"]) == 14
    assert first["bad_images"] == 1  # the missing image, skipped and counted
    for record in rounds:
        assert sum(record["per_class_size"]) == record["confident_size"] > 0
    assert epochs[1]["train_size"] == rounds[0]["confident_size"]
    result = json.loads((run_dir / "result.json").read_text())
    for key in ("method", "dataset", "noise_type", "noise_rate", "seed", "best_val_acc", "test_acc", "rounds",
                "wall_time_s", "device", "git_commit", "versions", "config"):
        assert key in result
    assert (result["method"], result["dataset"], result["noise_type"], result["noise_rate"]) == (
        "memomentum", "clothing1m", "real", None)
    assert result["best_val_acc"] == max(r["val_acc"] for r in epochs)
    best_epoch = next(r for r in epochs if r["val_acc"] == result["best_val_acc"])
    assert result["test_acc"] == best_epoch["test_acc"]
    assert len(result["rounds"]) == 3
    state = load_checkpoint(run_dir / "checkpoint.pt")  # weights_only loadable
    assert state["loop"]["outer"] == 2
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["fc.weight"].shape == (14, 512)
    assert Path(result["best_model_name"]).is_file()  # kept although no class needs it any more
    log = (base / "logs" / "results.txt").read_text()
    assert log.count("Best Test Acc") == 1
    assert not list(run_dir.glob(".*.tmp"))
    assert 0 <= result["test_acc_official"] <= 100 and 0 <= result["test_acc_last"] <= 100
    assert result["best_at"]["epoch"] == best_epoch["epoch"]
    for record in rounds:
        saved = np.load(run_dir / "rounds" / f"outer{record['outer']}_inner{record['inner']}.npz")
        assert int(saved["confident"].sum()) == record["confident_size"]
        assert sorted(saved["index"].tolist()) == list(range(len(tiny.train_keys)))
        kept = saved["confident"]
        np.testing.assert_array_equal(saved["predictions"][kept], saved["noisy_labels"][kept])


def test_resume_auto_on_a_finished_run_exits_at_once(finished_run, tiny, capsys):
    _, run_dir, base = finished_run
    before = (run_dir / "result.json").read_bytes()
    assert run_clothing_main(tiny_run_flags(tiny, run_dir, "--save_rounds", "--resume", "auto")) == 0
    assert "has finished" in capsys.readouterr().out
    assert (run_dir / "result.json").read_bytes() == before
    assert run_clothing_main(tiny_run_flags(tiny, run_dir, "--save_rounds", "--resume", "auto", "--lr", "1")) == 2
    assert "finished run made with other settings" in capsys.readouterr().err


def run_with_stop_requests(argv: list[str], should_stop, monkeypatch) -> int:
    """Clothing.py, with a stop request (as SIGTERM would make) whenever `should_stop()` says so."""

    class StopWhen:
        signal_name = "SIGTERM"

        def install(self):
            return self

        def __call__(self):
            return should_stop()

    with monkeypatch.context() as patch:
        patch.setattr(driver, "StopFlag", StopWhen)
        return run_clothing_main(argv)


@pytest.mark.parametrize("interval", ["0", "60"])  # after every epoch; or only when the stop comes
def test_preempted_run_resumes_to_the_same_result(finished_run, tiny, tmp_path, interval, monkeypatch):
    _, reference_dir, _ = finished_run
    run_dir = tmp_path / "run"
    argv = tiny_run_flags(tiny, run_dir, "--resume", "auto", "--checkpoint_every", interval)

    def epochs_logged() -> int:
        path = run_dir / "metrics.jsonl"
        return path.read_text().count('"kind": "epoch"') if path.exists() else 0

    # stops right after the first epoch (before the rebuild), then after the third (new outer round)
    for stop_after in (1, 3):
        assert run_with_stop_requests(argv, lambda: epochs_logged() >= stop_after, monkeypatch) == 75
    assert run_clothing_main(argv) == 0
    result = json.loads((run_dir / "result.json").read_text())
    reference = json.loads((reference_dir / "result.json").read_text())
    assert (result["best_val_acc"], result["test_acc"]) == (reference["best_val_acc"], reference["test_acc"])
    read = lambda folder: [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert comparable(read(run_dir)) == comparable(read(reference_dir))


def test_stop_request_abandons_the_epoch_in_progress(tiny, tmp_path, monkeypatch, capsys):
    calls = []

    def third_batch_stops() -> bool:  # polled after every training batch
        calls.append(1)
        return len(calls) >= 3

    assert run_with_stop_requests(tiny_run_flags(tiny, tmp_path / "run"), third_batch_stops, monkeypatch) == 75
    assert "stopped (SIGTERM)" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no epoch finished


def test_resume_refuses_a_changed_config_and_an_unasked_overwrite(finished_run, tiny, tmp_path, capsys):
    _, run_dir, _ = finished_run
    assert run_clothing_main(tiny_run_flags(tiny, run_dir)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert run_clothing_main(tiny_run_flags(tiny, run_dir, "--resume", "auto", "--lr", "0.1")) == 2
    assert "--lr (saved 0.005, given 0.1)" in capsys.readouterr().err


def test_a_last_training_batch_of_one_image_is_folded_into_the_one_before(tiny, tmp_path):
    """54 training images in batches of 53 leave one; at 32 pixels ResNet-18's last BatchNorm sees one
    value per channel and would fail ("Expected more than 1 value per channel when training")."""
    assert len(tiny.train_keys) % 53 == 1
    assert run_clothing_main(tiny_run_flags(tiny, tmp_path / "run", "--image_size", "32", "--batch_size", "53",
                                            "--max_outer_loop", "1", "--max_inner_loop", "1")) == 0


def test_unreadable_image_stops_with_its_name_unless_skipped(tiny, tmp_path, capsys):
    flags = [f for f in tiny_run_flags(tiny, tmp_path / "run") if f != "--skip_bad_images"]
    assert run_clothing_main(flags) == 2
    err = capsys.readouterr().err
    assert tiny.missing_image_key in err and "--skip_bad_images" in err and len(err.strip().splitlines()) == 1


def test_non_finite_loss_stops_with_exit_code_3(tiny, tmp_path, capsys):
    assert run_clothing_main(tiny_run_flags(tiny, tmp_path / "run", "--lr", "1e30")) == 3
    assert "last good checkpoint" in capsys.readouterr().err
