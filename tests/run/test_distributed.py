"""Tests of utils/run/distributed.py: the sharding rules, and a real 2-process torchrun on CPU (gloo).

The torchrun worker script checks, inside the two processes, that every example is predicted
exactly once and gathered back in order; it writes the rebuilt training set for given per-class
checkpoints (compared here with a single-process rebuild); it checks that the class-weighted loss
split over two DDP ranks gives the gradient of the whole batch; then it runs Clothing.py end to
end, whose files must be written once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from data.clothing_index import INDEX_FILE_NAME, build_index, index_to_bytes, read_all_splits
from models.pretrained import build_classifier
from tests.clothing_fixture import NUM_CLASSES, make_tiny_clothing1m
from utils.clothing_config import ClothingConfig
from utils.methods.memomentum_clothing1m import predict_by_class_checkpoints
from utils.clothing_task import open_task
from utils.selection import rebuild_training_set
from utils.run.distributed import gather_sharded, init_distributed, shard_for_training, shard_indices

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("n, world", [(0, 2), (1, 2), (7, 2), (8, 4), (10, 3), (5, 8)])
def test_shards_cover_every_position_exactly_once(n, world):
    shards = [shard_indices(n, rank, world) for rank in range(world)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("n, world", [(7, 2), (10, 3), (12, 4), (1, 2)])
def test_training_shards_have_equal_lengths_and_cover_the_epoch(n, world):
    order = np.random.RandomState(0).permutation(n)
    shards = [shard_for_training(order, rank, world) for rank in range(world)]
    assert len({len(shard) for shard in shards}) == 1  # DDP needs the same number of steps on every rank
    assert set(np.concatenate(shards).tolist()) == set(order.tolist())
    assert sum(map(len, shards)) - n < world  # at most world - 1 repeats


def test_single_process_is_world_one_without_a_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed("cpu")
    assert (context.rank, context.world_size, context.is_main, context.distributed) == (0, 1, True, False)
    values = torch.arange(5)
    assert gather_sharded(values, 5) is values
    assert not torch.distributed.is_initialized()


WORKER = textwrap.dedent('''
    """Runs in each of the two torchrun processes."""
    import json, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    sys.path.insert(0, sys.argv[1])
    torch.set_num_threads(1)
    from utils.clothing_config import ClothingConfig
    from utils.methods.memomentum_clothing1m import predict_by_class_checkpoints
    from utils.clothing_task import open_task
    from utils.selection import rebuild_training_set
    from utils.run.distributed import init_distributed
    from tests.run.test_distributed import run_of

    data_root, files, out = sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    context = init_distributed("cpu")
    config = ClothingConfig(data_root=data_root, arch="resnet18", image_size=40, no_pretrain=True,
                            num_workers=0, eval_batch_size=5, skip_bad_images=True, output_dir=out + "/unused")
    session = open_task(config, run_of(config, context))
    requested = []
    plain_batches = session.loader.batches
    def recording_batches(positions, batch_size):
        requested.extend(int(p) for p in positions)
        return plain_batches(positions, batch_size)
    session.loader.batches = recording_batches

    noisy = session.splits.labels[session.splits.train]
    predictions = predict_by_class_checkpoints(session, noisy, files)
    everyone = [None] * context.world_size
    dist.all_gather_object(everyone, requested)
    if context.is_main:
        seen = sorted(p for rank_positions in everyone for p in rank_positions)
        assert seen == sorted(session.splits.train.tolist()), "an example was predicted twice or never"
        np.savez(out + "/rebuild.npz", predictions=predictions, rebuilt=rebuild_training_set(noisy, predictions))

    # the class-weighted loss under DDP gives the gradient of the whole batch in one process
    from torch.nn.parallel import DistributedDataParallel
    from utils.clothing_task import ClassWeightedLoss
    torch.manual_seed(0)
    inputs, labels = torch.randn(8, 5), torch.tensor([0, 1, 2, 2, 0, 0, 1, 2])  # unequal per rank
    class_weights = torch.tensor([0.5, 1.0, 3.0])
    whole = torch.nn.Linear(5, 3)
    split = DistributedDataParallel(torch.nn.Linear(5, 3))
    split.module.load_state_dict(whole.state_dict())
    ClassWeightedLoss(class_weights, 1)(whole(inputs), labels).backward()
    mine = slice(context.rank, None, context.world_size)
    ClassWeightedLoss(class_weights, context.world_size)(split(inputs[mine]), labels[mine]).backward()
    assert torch.allclose(split.module.weight.grad, whole.weight.grad, atol=1e-6), "DDP loss scaling"

    # Clothing.py end to end in these same two processes (it reuses the process group)
    import Clothing
    code = Clothing.main(sys.argv[5:])
    sys.exit(code)
''')


def run_of(config, context):
    """The run driver's side of a run, as the task sees it, without the rest of the driver."""
    from utils.run.driver import Run
    from utils.run.files import RunFiles
    from utils.run.preemption import StopFlag
    from utils.run.threads import ThreadGovernor

    return Run(config, RunFiles(config.run_dir), context, StopFlag(), ThreadGovernor(1))


def make_dataset(folder: Path):
    data = make_tiny_clothing1m(folder / "Clothing1M")
    (data.root / INDEX_FILE_NAME).write_bytes(index_to_bytes(build_index(read_all_splits(data.root, True))))
    return data


def random_checkpoints(folder: Path) -> list[str]:
    """Two different random networks; classes alternate between them."""
    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = folder / f"checkpoint-{seed}.pt"
        torch.save(build_classifier("resnet18", NUM_CLASSES, None).state_dict(), path)
        files.append(str(path))
    return [files[c % 2] for c in range(NUM_CLASSES)]


def single_process_rebuild(data_root: Path, files: list[str], out: Path) -> tuple[np.ndarray, np.ndarray]:
    config = ClothingConfig(data_root=str(data_root), arch="resnet18", image_size=40, no_pretrain=True,
                            num_workers=0, eval_batch_size=7, skip_bad_images=True, output_dir=str(out))
    session = open_task(config, run_of(config, init_distributed("cpu")))
    noisy = session.splits.labels[session.splits.train]
    predictions = predict_by_class_checkpoints(session, noisy, files)
    return predictions, rebuild_training_set(noisy, predictions)


def test_two_process_torchrun_predicts_once_rebuilds_identically_and_writes_once(tmp_path):
    data = make_dataset(tmp_path)
    files = random_checkpoints(tmp_path)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    run_dir = tmp_path / "run"
    clothing_flags = ["--data_root", str(data.root), "--arch", "resnet18", "--image_size", "40", "--no_pretrain",
                      "--n_epoch", "1", "--max_inner_loop", "2", "--max_outer_loop", "1", "--num_workers", "0",
                      "--batch_size", "8", "--eval_batch_size", "16", "--output_dir", str(run_dir),
                      "--model_dir", str(tmp_path / "weights"), "--no_progress", "--skip_bad_images"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
               str(ROOT), str(data.root), json.dumps(files), str(tmp_path), *clothing_flags]
    finished = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    # the same checkpoints, one process: the same predictions and the same rebuilt training set
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predictions, rebuilt = single_process_rebuild(data.root, files, tmp_path / "single")
    finally:
        torch.set_num_threads(threads)
    saved = np.load(tmp_path / "rebuild.npz")
    assert saved["predictions"].tolist() == predictions.tolist()
    assert saved["rebuilt"].tolist() == rebuilt.tolist()
    assert (predictions == -1).sum() == 1  # only the missing image went unpredicted

    # files written once, by rank 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["inner"]) for r in records] == [("epoch", 0), ("round", 0), ("epoch", 1)]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["dataset"] == "clothing1m"
    assert (tmp_path / "logs" / "results.txt").read_text().count("Best Test Acc") == 1
    assert finished.stdout.count("configuration:") == 1
    assert finished.stdout.count("outer 0 round 0 epoch   1:") == 1
    assert not list(run_dir.glob(".*.tmp")) and not list((tmp_path / "weights").rglob(".*.tmp"))
