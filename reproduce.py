"""Reproduce the paper's tables: run a grid of settings × methods × seeds, then summarise it.

    python reproduce.py --grid paper --seeds 1 2 3 --methods memomentum ce --out runs/paper
    python reproduce.py --grid paper --seeds 1 2 3 --out runs/paper --gpus 0 1 2 3
    python reproduce.py --grid paper --seeds 1 2 3 --out runs/paper --launcher slurm --submit
    python reproduce.py --summarize runs/paper

Grids live in configs/ (paper, cifarn, clothing1m, digits) or any JSON file of the same form.
Each run gets its own folder under --out; finished runs are skipped and unfinished ones resumed,
so the same command continues an interrupted sweep. A run whose result.json is corrupt is set
aside (result.json.corrupt) and run again. The logic lives in utils/sweeps/: grid.py (grids, run
naming, commands), launchers.py (local, SLURM), outcomes.py (what a run folder says), summary.py
(tables), plots.py (figures). Exit codes: 0 all runs finished, 1 some failed or were preempted,
2 bad input (one "error: ..." line), 75 stopped by SIGTERM/SIGUSR1 and 130 by Ctrl-C (the running
runs are stopped too, after saving; the same command resumes the sweep).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

from utils.run.preemption import stop_at_once_before_the_run

if __name__ == "__main__":  # a stop request during the imports below (torch: seconds) ends in one line
    stop_at_once_before_the_run()

from utils.errors import StopRequested, UserError, exit_code_of
from utils.methods import METHODS
from utils.run.config import COUNT_LIMIT, FlagParser
from utils.sweeps.grid import (
    CONTROL_CHARACTERS,
    Job,
    build_jobs,
    check_seeds,
    expand_runs,
    load_grid,
    parse_extra,
    select_settings,
    write_sweep_record,
)
from utils.sweeps.launchers import (
    LocalLauncher,
    SlurmOptions,
    check_gpus,
    default_python,
    render_slurm_script,
    slurm_files,
    submit_slurm,
    write_slurm_files,
)
from utils.sweeps.outcomes import refuse_finished_runs_of_other_settings, run_state, set_aside_corrupt_result
from utils.sweeps.summary import Summary, bar_chart_numbers, status_counts, summarize_sweep


def build_parser() -> argparse.ArgumentParser:
    parser = FlagParser(description=__doc__.split("\n")[0], prog="reproduce.py")
    parser.add_argument("--grid", help="grid name in configs/ (paper, cifarn, clothing1m, digits) or a JSON path")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                        help="seeds to run for every setting (0 <= seed < 2**32)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"methods to run ({', '.join(METHODS)}); default: those the grid lists")
    parser.add_argument("--only", nargs="+", default=None,
                        help="run only these settings of the grid: a key like cifar10-symmetric-0.2 or a "
                             "prefix like cifar10 or cifar10-instance")
    parser.add_argument("--out", help="sweep folder: one run folder per (setting, method, seed), tables, plots")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local: run here (one after another, or one per --gpus entry); "
                             "slurm: write one sbatch array script")
    parser.add_argument("--gpus", nargs="+", default=None,
                        help="local: run this many at once, one per listed GPU id (CUDA_VISIBLE_DEVICES); "
                             "repeat an id to share a GPU (0 0 1 1); '0,1' makes two GPUs visible to one run "
                             "(main.py uses one of them; Clothing.py needs torchrun for several); "
                             "GPU-/MIG- UUIDs work too")
    parser.add_argument("--jobs", type=int, default=1,
                        help="local, without --gpus: run this many at once (on the CPU, each with its share "
                             "of the cores)")
    parser.add_argument("--dry_run", action="store_true", help="print what would run (and the script), run nothing")
    parser.add_argument("--submit", action="store_true", help="slurm: submit the script with sbatch")
    parser.add_argument("--extra", action="append", default=None,
                        help="flags appended to every run's command, e.g. --extra=\"--amp\"; they override "
                             "the grid's flags (not those the sweep sets: --seed, --output_dir, ...)")
    parser.add_argument("--python", default=default_python(), help="interpreter that runs main.py")
    parser.add_argument("--summarize", metavar="DIR", help="only (re)write the tables and plots of sweep DIR")
    parser.add_argument("--no_plots", action="store_true", help="tables only (no matplotlib figures)")
    slurm = parser.add_argument_group("slurm (per array task = per run)")
    slurm.add_argument("--slurm_time", default="12:00:00",
                       help="time limit; a run that hits it saves, exits 75 and is requeued")
    slurm.add_argument("--slurm_gres", default="gpu:1", help="generic resources; 'none' for CPU jobs")
    slurm.add_argument("--slurm_cpus_per_task", type=int, default=8, help="CPU cores")
    slurm.add_argument("--slurm_mem", default=None, help="memory per task, e.g. 32G; unset: the cluster's default")
    slurm.add_argument("--slurm_partition", default=None, help="partition; unset: the cluster's default")
    slurm.add_argument("--slurm_max_parallel", type=int, default=None, help="at most this many runs at once (%%K)")
    slurm.add_argument("--slurm_option", action="append", default=[],
                       help="any further sbatch option, e.g. --slurm_option=--account=abc (repeatable)")
    return parser


def attach_option_values(argv: Sequence[str], options: Sequence[str] = ("--extra", "--slurm_option")) -> list[str]:
    """Let `--extra "--amp"` work: argparse would take a value starting with '--' for a flag."""
    fixed: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        if tokens[i] in options and i + 1 < len(tokens):
            fixed.append(f"{tokens[i]}={tokens[i + 1]}")
            i += 2
        else:
            fixed.append(tokens[i])
            i += 1
    return fixed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(attach_option_values(sys.argv[1:] if argv is None else argv))
    _refuse_control_characters(args)
    if args.summarize:
        return args
    if not args.grid or not args.out:
        raise UserError("reproduce.py: give --grid and --out to run a sweep, or --summarize DIR (see --help)")
    if args.launcher == "slurm" and args.gpus:
        raise UserError("--gpus is for the local launcher; with slurm each task asks for --slurm_gres")
    if args.submit and args.launcher != "slurm":
        raise UserError("--submit needs --launcher slurm")
    check_seeds(args.seeds)
    check_gpus(args.gpus or ())
    if args.gpus and args.jobs != 1:
        raise UserError("--jobs is for runs without --gpus; with --gpus, one run goes per listed GPU")
    for name in ("jobs", "slurm_cpus_per_task", "slurm_max_parallel"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= COUNT_LIMIT:
            raise UserError(f"--{name} must be between 1 and {COUNT_LIMIT}, got {value}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file, not a sweep folder")
    return args


def _refuse_control_characters(args: argparse.Namespace) -> None:
    """A newline in a path, time or option would split a line of the SLURM files or the commands."""
    for name, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and CONTROL_CHARACTERS.search(text):
                raise UserError(f"--{name} {text!r} holds a control character (e.g. a newline)")


def plan_jobs(args: argparse.Namespace) -> tuple[list[Job], Path]:
    grid = select_settings(load_grid(args.grid), args.only)
    runs = expand_runs(grid, args.methods, args.seeds)
    out = Path(args.out).resolve()
    jobs = build_jobs(grid, runs, out, args.python, parse_extra(args.extra))
    if not args.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        refuse_finished_runs_of_other_settings(jobs)
        write_sweep_record(out, grid, runs)
        repair_corrupt_results(jobs)
    return jobs, out


def repair_corrupt_results(jobs: Sequence[Job]) -> None:
    """A corrupt result.json would mark its run finished forever: set it aside so the run runs again."""
    for job in jobs:
        aside = set_aside_corrupt_result(job.run_dir)
        if aside is not None:
            print(f"{job.name}: its result.json is corrupt; set aside as {aside.name}, the run runs again")


def print_plan(jobs: Sequence[Job]) -> None:
    actions = {"finished": "skip (finished)", "resumable": "resume", "new": "start",
               "corrupt": "run again (corrupt result.json, set aside)"}
    for job in jobs:
        print(f"{actions[run_state(job.run_dir)]:<16} {job.name}\n    {shlex.join(job.command)}")


def run_local(args: argparse.Namespace, jobs: list[Job], out: Path) -> int:
    if args.dry_run:
        print_plan(jobs)
        return 0
    launcher = LocalLauncher(gpus=args.gpus, jobs=args.jobs)
    try:
        launcher.run_all(jobs)
    except StopRequested:
        summarize(out, plots=False)  # the tables of what finished; then one line and 75 or 130
        raise
    counts = summarize(out, plots=not args.no_plots)
    return 0 if counts["finished"] == sum(counts.values()) else 1


def slurm_options(args: argparse.Namespace, grid_name: str) -> SlurmOptions:
    gres = None if args.slurm_gres.lower() == "none" else args.slurm_gres
    return SlurmOptions(time=args.slurm_time, gres=gres, cpus_per_task=args.slurm_cpus_per_task,
                        mem=args.slurm_mem, partition=args.slurm_partition,
                        max_parallel=args.slurm_max_parallel, extra_options=tuple(args.slurm_option),
                        job_name=f"memomentum-{grid_name}")


def run_slurm(args: argparse.Namespace, jobs: list[Job], out: Path) -> int:
    options = slurm_options(args, Path(args.grid).stem)
    if args.dry_run:
        print(render_slurm_script(jobs, slurm_files(out), options))
        print_plan(jobs)
        return 0
    files = write_slurm_files(jobs, out, options)
    print(f"wrote {files.script} ({len(jobs)} array tasks, commands in {files.commands})")
    if args.submit:
        print(submit_slurm(files.script))
    else:
        print(f"submit with: sbatch {files.script}")
    print(f"when the tasks are done: python reproduce.py --summarize {out}")
    return 0


def summarize(out: Path, plots: bool) -> dict[str, int]:
    """Write the tables (and, with `plots`, the sweep bar chart and each finished run's figures)."""
    summary, written = summarize_sweep(out)
    counts = status_counts(summary)
    print(f"summary of {out}: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
    print(f"tables: {', '.join(str(p) for p in written)}")
    if plots:
        draw_plots(Path(out), summary)
    return counts


def draw_plots(out: Path, summary: Summary) -> list[Path]:
    from utils.sweeps.plots import plot_run_if_stale, plot_sweep  # matplotlib only when plotting

    written = plot_sweep(*bar_chart_numbers(summary), out / "plots")
    for row in summary.rows:
        for cell in row.cells.values():
            for outcome in cell.finished_outcomes:
                try:
                    written += plot_run_if_stale(out / outcome.name)
                except UserError as error:  # one unreadable run must not cost the other plots
                    print(f"warning: no plots for {outcome.name}: {' '.join(str(error).split())}",
                          file=sys.stderr)
    return written


def reproduce(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    if args.summarize:
        summarize(Path(args.summarize), plots=not args.no_plots)
        return 0
    jobs, out = plan_jobs(args)
    if args.launcher == "slurm":
        return run_slurm(args, jobs, out)
    return run_local(args, jobs, out)


def main(argv: Sequence[str] | None = None) -> int:
    return exit_code_of(lambda: reproduce(argv))


if __name__ == "__main__":
    sys.exit(main())
