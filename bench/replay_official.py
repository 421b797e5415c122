"""Our Me-Momentum and the authors' own functions on identical inputs, step by step (docs/results.md,
"Against the official code on real CIFAR-10 images").

    python bench/replay_official.py --official CHECKOUT -- --dataset cifar10 --data_path DIR \\
        --noise_type instance --noise_rate 0.2 --n_epoch 3 --max_outer_loop 1 --max_inner_loop 2 --seed 1

Runs our main.py in this process with the official arithmetic (`--sgd plain --channels_last off`),
recording the initial weights of every network it builds and every batch its device pipeline
makes (training, validation, extraction and test images, crops and flips included). Then runs the
official main.py's loop, as docs/method.md writes it, with the authors' `train`, `evaluate_val`,
`predict`, `isSame` and `evaluate` and their ResNet (imported from CHECKOUT, a checkout of
github.com/tmllab/2021_ICCV_Me-Momentum) on exactly those weights and batches. Prints both sides'
validation accuracy of every epoch, the confident-set sizes and the reported test accuracy; exits
0 when every figure is identical. CIFAR-10/100 only (their LeNet's layer names differ from ours).

What it rules in or out: with the same weights and inputs, any difference is in the loop or the
training arithmetic (engine, SGD, BatchNorm, the latest/reload logic, the extraction); what
remains between whole runs of the two programs is their random draws.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import data.device_pipeline as device_pipeline  # noqa: E402
import utils.vision_task as vision_task  # noqa: E402

OFFICIAL_NETWORKS = {"cifar10": "ResNet18", "cifar100": "ResNet34"}


class Recorder:
    """Wraps the device pipeline and the task's network factory to keep what they hand out."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]]] = []
        self.initial_weights: list[dict[str, torch.Tensor]] = []
        self.task: Any = None

    def install(self) -> None:
        recorder, batches, new_model, init = (self, device_pipeline.DevicePipeline.batches,
                                             vision_task.VisionTask.new_model, vision_task.VisionTask.__init__)

        def recording_batches(pipeline, images, labels, *args, **kwargs):
            kept = []
            for batch, batch_labels, positions in batches(pipeline, images, labels, *args, **kwargs):
                kept.append((batch.clone(), positions.clone(), None if batch_labels is None else batch_labels.clone()))
                yield batch, batch_labels, positions
            recorder.calls.append((recorder.kind_of(images, labels), kept))

        def recording_new_model(task):
            model = new_model(task)
            recorder.initial_weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            return model

        def recording_init(task, *args, **kwargs):
            init(task, *args, **kwargs)
            recorder.task = task

        device_pipeline.DevicePipeline.batches = recording_batches
        vision_task.VisionTask.new_model = recording_new_model
        vision_task.VisionTask.__init__ = recording_init

    def kind_of(self, images: torch.Tensor, labels: torch.Tensor | None) -> str:
        if labels is not None:
            return "train"
        return {id(self.task.val_images): "val", id(self.task.test_images): "test"}.get(id(images), "predict")


class OfficialReplay:
    """The official main.py loop (docs/method.md, "Me-Momentum") fed the recorded weights and batches."""

    def __init__(self, checkout: Path, recorder: Recorder, dataset: str, flags: dict[str, str]) -> None:
        sys.path.insert(0, str(checkout))
        torch.Tensor.cuda = lambda self, *a, **k: self          # their code calls .cuda() everywhere
        torch.nn.Module.cuda = lambda self, *a, **k: self
        import common.tools as official
        self.official = official
        self.calls, self.weights = list(recorder.calls), list(recorder.initial_weights)
        task = recorder.task
        self.labels = {"val": task.val_labels.cpu(), "test": task.test_labels.cpu(), "predict": task.train_labels.cpu()}
        self.train_labels = task.train_labels.cpu().numpy().tolist()
        self.num_classes, self.network = task.num_classes, OFFICIAL_NETWORKS[dataset]
        self.flags = flags
        self.log: dict[str, list] = {"val": [], "confident": []}

    def loader(self, kind: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        recorded_kind, batches = self.calls.pop(0)
        if recorded_kind != kind:
            raise SystemExit(f"the loops part ways: the official loop wants a {kind} pass, ours made a {recorded_kind} pass")
        return [(images, labels if labels is not None else self.labels[kind][positions])
                for images, positions, labels in batches]

    def new_model(self) -> torch.nn.Module:
        model = self.official.createModel(self.network, self.num_classes)
        model.load_state_dict(self.weights.pop(0))
        return model

    def sgd(self, model: torch.nn.Module) -> torch.optim.SGD:
        return torch.optim.SGD(model.parameters(), lr=float(self.flags["lr"]),
                               weight_decay=float(self.flags["weight_decay"]), momentum=0.9)

    def validate(self, model: torch.nn.Module) -> float:
        accuracy, _ = self.official.evaluate_val(model, self.loader("val"), self.num_classes, "")
        self.log["val"].append(float(accuracy))
        return accuracy

    def run(self) -> float:
        off, flags, criterion = self.official, self.flags, torch.nn.CrossEntropyLoss()
        n_epoch, best_val, best_test, latest = int(flags["n_epoch"]), 0, 0.0, None
        for _ in range(int(flags["max_outer_loop"])):
            model = self.new_model()
            optimizer, margin, inner_best, last_round = self.sgd(model), 0, 0, 0
            for epoch in range(n_epoch):
                off.train(model, self.loader("train"), optimizer, criterion, epoch)
                accuracy = self.validate(model)
                if accuracy > inner_best + margin:
                    inner_best, margin, latest = accuracy, 0, {k: v.clone() for k, v in model.state_dict().items()}
                else:
                    margin += 0.1
                if margin > 2:
                    break
            for _ in range(int(flags["max_inner_loop"]) - 1):
                model = self.new_model()
                model.load_state_dict(latest)
                optimizer = self.sgd(model)
                scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[40, 80], gamma=0.1)
                with torch.no_grad():  # our batches were made under inference_mode
                    predictions = off.predict(self.loader("predict"), model)
                _, kept = off.isSame(predictions, self.train_labels, None, np.arange(len(predictions)), self.num_classes)
                self.log["confident"].append(len(kept))
                for epoch in range(n_epoch):
                    off.train(model, self.loader("train"), optimizer, criterion, epoch)
                    accuracy = self.validate(model)
                    scheduler.step()
                    if accuracy > inner_best:
                        inner_best, latest = accuracy, {k: v.clone() for k, v in model.state_dict().items()}
                        if accuracy > best_val:
                            best_val = accuracy
                            best_test, _ = off.evaluate(model, self.loader("test"), criterion, "")
                if inner_best > last_round:
                    last_round = inner_best
                else:
                    break
        return float(best_test)


def our_figures(run_dir: Path) -> tuple[dict[str, list], float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    figures = {"val": [r["val_acc"] for r in records if r.get("kind") == "epoch"],
               "confident": [r["confident_size"] for r in records if r.get("kind") == "round"]}
    return figures, float(json.loads((run_dir / "result.json").read_text())["test_acc_official"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, help="a checkout of the authors' Me-Momentum code")
    parser.add_argument("--out", default="runs/replay", help="our run folder")
    parser.add_argument("main_flags", nargs=argparse.REMAINDER, help="main.py's flags, after --")
    args = parser.parse_args(argv)
    flags = [flag for flag in args.main_flags if flag != "--"]
    recorder = Recorder()
    recorder.install()
    import main as our_main
    ours = ["--sgd", "plain", "--channels_last", "off", "--no_progress", "--output_dir", args.out,
            "--model_dir", str(Path(args.out) / "model"), *flags]
    if our_main.main(ours) != 0:
        return 1
    config = json.loads((Path(args.out) / "config.json").read_text())
    replay = OfficialReplay(Path(args.official).resolve(), recorder, config["dataset"], {k: str(v) for k, v in config.items()})
    official_test = replay.run()
    our_log, our_test = our_figures(Path(args.out))
    # their accuracy meter sums in float32, ours in float64: equal to float32 rounding
    same = our_log == replay.log and abs(our_test - official_test) < 1e-4
    for name in ("val", "confident"):
        print(f"{name:9s} ours     {our_log[name]}\n{'':9s} official {replay.log[name]}")
    print(f"reported test accuracy: ours {our_test}, official {official_test}")
    print("identical" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
