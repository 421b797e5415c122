"""Our Me-Momentum (or PES) against its authors' code on the same files, seed by seed (docs/results.md,
"Against the official code on real CIFAR-10 images").

    python bench/bench_fidelity.py --official CHECKOUT --data_path CIFAR_DIR [--seeds 1 2 3 4]
        [--dataset cifar10] [--jobs 2] [--extra="--channels_last off"] [--out runs/fidelity]
    python bench/bench_fidelity.py --method pes --official PES_CHECKOUT --data_path CIFAR_DIR ...

CHECKOUT is a checkout of github.com/tmllab/2021_ICCV_Me-Momentum (with --method pes, of
github.com/tmllab/2021_NeurIPS_PES, whose PES_cs.py runs: --n_epoch becomes its --num_epochs, and
its default schedule here is symmetric 50 % with --n_epoch 6 --T1 2 --T2 1 --T3 1); it runs through
`../shared/tools/run_official_cpu.py` (which makes `.cuda()` a no-op on a CPU and changes no value).
`--reuse` takes runs already finished under --out (to add seeds, or to print the table again).
CIFAR_DIR holds `cifar-10-batches-py` (e.g. the 5,000/2,000-image subset that
`../shared/tools/make_cifar_subset.py` writes). The default schedule is the short one of the
comparison in docs/results.md: instance noise 20 %, `--n_epoch 3 --max_outer_loop 1
--max_inner_loop 2`. Both report the test accuracy of the best-validation model as the authors'
code prints it (the mean of per-batch accuracies): the official `Best Test Acc`, our
`test_acc_official`. The table gives each seed, the mean gap and both sides' seed-to-seed spread.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OFFICIAL_RUNNER = REPO.parent / "shared" / "tools" / "run_official_cpu.py"

# Each method's authors' script: its name, its printed figure, whether it takes --model_dir, its
# names of our flags, and the default noise and schedule of the comparison.
OFFICIAL = {
    "memomentum": {"script": "main.py", "result": re.compile(r"Test acc\s+([0-9.]+)\s*$", re.MULTILINE),
                   "model_dir": True, "renames": {}, "noise": ("instance", "0.2"),
                   "schedule": "--n_epoch 3 --max_outer_loop 1 --max_inner_loop 2"},
    "pes": {"script": "PES_cs.py", "result": re.compile(r"Best Test Acc:\s*([0-9.]+)\s*$", re.MULTILINE),
            "model_dir": False, "renames": {"--n_epoch": "--num_epochs"}, "noise": ("symmetric", "0.5"),
            "schedule": "--n_epoch 6 --T1 2 --T2 1 --T3 1"},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="memomentum", choices=sorted(OFFICIAL))
    parser.add_argument("--official", required=True, help="a checkout of the method's authors' code")
    parser.add_argument("--data_path", required=True, help="folder holding cifar-10-batches-py (or MNIST/raw)")
    parser.add_argument("--runner", default=str(OFFICIAL_RUNNER), help="the script that runs the authors' code on a CPU")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--noise_type", help="default: instance (Me-Momentum), symmetric (PES)")
    parser.add_argument("--noise_rate", help="default: 0.2 (Me-Momentum), 0.5 (PES)")
    parser.add_argument("--schedule", help="flags both sides get (default: the method's short schedule)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--extra", default="", help="flags only our main.py gets")
    parser.add_argument("--sides", default="official,ours", help="which sides to run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each gets one thread)")
    parser.add_argument("--out", default="runs/fidelity", help="logs and run folders go here")
    parser.add_argument("--reuse", action="store_true",
                        help="take the figure of a run already finished under --out instead of running it again")
    args = parser.parse_args(argv)
    official = OFFICIAL[args.method]
    args.noise_type = args.noise_type or official["noise"][0]
    args.noise_rate = args.noise_rate or official["noise"][1]
    args.schedule = args.schedule if args.schedule is not None else official["schedule"]
    return args


def common_flags(args: argparse.Namespace, seed: int) -> list[str]:
    return ["--dataset", args.dataset, "--data_path", str(Path(args.data_path).resolve()),
            "--noise_type", args.noise_type, "--noise_rate", args.noise_rate, "--seed", str(seed),
            *args.schedule.split()]


def run_official(args: argparse.Namespace, seed: int, out: Path) -> float:
    """The authors' script on the CPU; its printed best-validation test accuracy."""
    official = OFFICIAL[args.method]
    log = out / f"official-seed{seed}.log"
    if args.reuse and log.is_file() and official["result"].findall(log.read_text()):
        return float(official["result"].findall(log.read_text())[-1])
    (Path(args.official) / "logs").mkdir(exist_ok=True)  # their code appends to ./logs/results.txt
    flags = [official["renames"].get(flag, flag) for flag in common_flags(args, seed)]
    command = [sys.executable, str(Path(args.runner).resolve()), official["script"], *flags]
    if official["model_dir"]:
        command += ["--model_dir", str(out / f"official-seed{seed}-model")]
    with open(log, "w") as stream:
        subprocess.run(command, cwd=args.official, stdout=stream, stderr=subprocess.STDOUT, check=True,
                       env=one_thread_env())
    found = official["result"].findall(log.read_text())
    if not found:
        raise SystemExit(f"no test accuracy line in {log}")
    return float(found[-1])


def run_ours(args: argparse.Namespace, seed: int, out: Path) -> float:
    """Our main.py; result.json's test_acc_official (the same measure as the official print)."""
    run_dir = out / f"ours-seed{seed}"
    if args.reuse and (run_dir / "result.json").is_file():
        return float(json.loads((run_dir / "result.json").read_text())["test_acc_official"])
    command = [sys.executable, str(REPO / "main.py"), *common_flags(args, seed), "--method", args.method,
               "--num_threads", "1",
               "--no_progress", "--output_dir", str(run_dir), "--model_dir", str(run_dir / "model"),
               *args.extra.split()]
    with open(out / f"ours-seed{seed}.log", "w") as stream:
        subprocess.run(command, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT, check=True, env=one_thread_env())
    return float(json.loads((run_dir / "result.json").read_text())["test_acc_official"])


def last_epoch(out: Path, seed: int) -> float:
    return float(json.loads((out / f"ours-seed{seed}" / "result.json").read_text())["test_acc_last"])


def one_thread_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sides = {"official": run_official, "ours": run_ours}
    chosen = [side for side in args.sides.split(",") if side]
    jobs = [(side, seed) for seed in args.seeds for side in chosen]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(zip(jobs, pool.map(lambda job: sides[job[0]](args, job[1], out), jobs)))
    if "ours" in chosen:  # where no inner-round epoch beat the warm-up, 0 is reported: show what it reached
        print("ours, last epoch (exact): " + ", ".join(f"seed {seed} {last_epoch(out, seed):.2f}" for seed in args.seeds))
    print(f"{args.dataset} {args.noise_type} {args.noise_rate}, {args.schedule}; ours: {args.extra or 'defaults'}")
    print("| seed | " + " | ".join(chosen) + (" | ours − official |" if len(chosen) == 2 else " |"))
    gaps = []
    for seed in args.seeds:
        row = [f"{results[(side, seed)]:.2f}" for side in chosen]
        if len(chosen) == 2:
            gaps.append(results[("ours", seed)] - results[("official", seed)])
            row.append(f"{gaps[-1]:+.2f}")
        print(f"| {seed} | " + " | ".join(row) + " |")
    print("| mean ± sd | " + " | ".join(spread([results[(side, s)] for s in args.seeds]) for side in chosen)
          + (f" | {statistics.fmean(gaps):+.2f} |" if gaps else " |"))


if __name__ == "__main__":
    main()
