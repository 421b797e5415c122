"""Clothing.py end to end on the CPU (tiny images, resnet18, seconds): every output, resuming after
stop requests, refusals, a batch of one, unreadable images, a non-finite loss."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import utils.run.driver as driver
from tests.clothing_fixture import tiny_with_index
from tests.runs import clothing_main
from utils.run.checkpoint import load_checkpoint


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    """Runs append to logs/results.txt in the working directory (as officially): keep it in tmp."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny set with its index built (unlabelled key dropped; the missing image stays listed)."""
    return tiny_with_index(tmp_path_factory.mktemp("clothing"))


def tiny_run_flags(tiny, run_dir: Path, *extra: str) -> list[str]:
    return ["--data_root", str(tiny.root), "--arch", "resnet18", "--image_size", "40", "--no_pretrain",
            "--n_epoch", "1", "--max_inner_loop", "2", "--max_outer_loop", "2", "--num_workers", "0",
            "--batch_size", "4", "--eval_batch_size", "16", "--output_dir", str(run_dir),
            "--model_dir", str(run_dir.parent / f"{run_dir.name}-weights"), "--no_progress",
            "--skip_bad_images", *extra]

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
        code = clothing_main(tiny_run_flags(tiny, run_dir, "--save_rounds"))
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
    assert state["position"]["outer"] == 2
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
    assert clothing_main(tiny_run_flags(tiny, run_dir, "--save_rounds", "--resume", "auto")) == 0
    assert "has finished" in capsys.readouterr().out
    assert (run_dir / "result.json").read_bytes() == before
    assert clothing_main(tiny_run_flags(tiny, run_dir, "--save_rounds", "--resume", "auto", "--lr", "1")) == 2
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
        return clothing_main(argv)

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
    assert clothing_main(argv) == 0
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
    assert clothing_main(tiny_run_flags(tiny, run_dir)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert clothing_main(tiny_run_flags(tiny, run_dir, "--resume", "auto", "--lr", "0.1")) == 2
    assert "--lr (saved 0.005, given 0.1)" in capsys.readouterr().err

def test_a_last_training_batch_of_one_image_is_folded_into_the_one_before(tiny, tmp_path):
    """54 training images in batches of 53 leave one; at 32 pixels ResNet-18's last BatchNorm sees one
    value per channel and would fail ("Expected more than 1 value per channel when training")."""
    assert len(tiny.train_keys) % 53 == 1
    assert clothing_main(tiny_run_flags(tiny, tmp_path / "run", "--image_size", "32", "--batch_size", "53",
                                            "--max_outer_loop", "1", "--max_inner_loop", "1")) == 0

def test_unreadable_image_stops_with_its_name_unless_skipped(tiny, tmp_path, capsys):
    flags = [f for f in tiny_run_flags(tiny, tmp_path / "run") if f != "--skip_bad_images"]
    assert clothing_main(flags) == 2
    err = capsys.readouterr().err
    assert tiny.missing_image_key in err and "--skip_bad_images" in err and len(err.strip().splitlines()) == 1

def test_non_finite_loss_stops_with_exit_code_3(tiny, tmp_path, capsys):
    assert clothing_main(tiny_run_flags(tiny, tmp_path / "run", "--lr", "1e30")) == 3
    assert "last good checkpoint" in capsys.readouterr().err
