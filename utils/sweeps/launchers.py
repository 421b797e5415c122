"""Running the jobs of a sweep: the local launcher (one run at a time, or one per GPU) and SLURM
array scripts (one task per run).

Both follow the run contract of main.py: `--resume auto` continues an unfinished run, a readable
result.json marks a finished one, exit code 75 (utils.errors.EXIT_PREEMPTED) means "saved,
run me again", 130 (EXIT_INTERRUPTED) "stopped by Ctrl-C after saving". Nothing here schedules work across machines: on a cluster SLURM does that.
"""
from __future__ import annotations

import ctypes
import datetime
import os
import re
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from utils.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, StopRequested, UserError
from utils.run.atomic import atomic_write_json, atomic_write_text
from utils.run.files import RunFiles
from utils.run.preemption import install_stop_handlers
from utils.run.threads import usable_cpus
from utils.sweeps.grid import REPO_ROOT, Job
from utils.sweeps.outcomes import read_launcher_record, run_state, set_aside_corrupt_result

LOG_TAIL_LINES = 30
STOP_GRACE_S = 60.0  # how long an interrupted run may take to save its checkpoint before it is killed
EXIT_CANNOT_START = 127  # as a shell reports a command it cannot run
PR_SET_PDEATHSIG = 1     # prctl(2): the signal a process gets when its parent dies
# What CUDA_VISIBLE_DEVICES takes: GPU indices (comma-separated for a run on several) or UUIDs.
GPU_ID = re.compile(r"\d+(,\d+)*|(GPU|MIG)-[0-9A-Za-z/-]+")


def check_gpus(gpus: Sequence[str]) -> None:
    """--gpus entries must be what CUDA_VISIBLE_DEVICES understands; a typo would hide every GPU."""
    for gpu in gpus:
        if not GPU_ID.fullmatch(gpu):
            raise UserError(f"--gpus {gpu!r}: give GPU indices (0 1 2), comma-joined indices for a run "
                            f"on several GPUs (0,1), or GPU-/MIG- UUIDs")


# --------------------------------------------------------------------------- local launcher


@dataclass
class LocalLauncher:
    """Runs jobs as subprocesses: one at a time, `jobs` at once, or one per entry of `gpus` at once.

    Runs at once share the CPU cores: each gets OMP_NUM_THREADS = its share of the usable cores
    (unless the user set OMP_NUM_THREADS), so that no run's threads wait on another's.

    Finished runs are skipped, unfinished ones resumed (the command carries --resume auto), and
    a failed run is recorded in <run>/launcher.json while the sweep goes on. A corrupt result.json
    is set aside (result.json.corrupt) and its run run again.
    """

    gpus: Sequence[str] | None = None
    jobs: int = 1
    cwd: Path = REPO_ROOT
    echo: Callable[[str], None] = lambda line: print(line + "\n", end="", flush=True)  # one write: threads
    _slots: "queue.Queue[str | None]" = field(default_factory=queue.Queue, init=False)
    _running: dict[str, subprocess.Popen] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)

    def run_all(self, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        """Run every job; returns one launcher record per job, in the order of `jobs`.

        A stop request to the launcher (SIGTERM, SIGUSR1, Ctrl-C) is passed on to the running runs,
        which save and exit; the launcher waits for them, then raises StopRequested. Should the
        launcher itself be killed, each run still gets SIGTERM (Linux: the parent-death signal)."""
        slots = list(self.gpus) if self.gpus else [None] * min(self.jobs, max(len(jobs), 1))
        for slot in slots:
            self._slots.put(slot)
        records: list[dict[str, Any] | None] = [None] * len(jobs)
        previous = self._forward_stops()
        try:
            with ThreadPoolExecutor(max_workers=len(slots)) as pool:
                futures = [pool.submit(self._run_one, i, len(jobs), job) for i, job in enumerate(jobs)]
                try:
                    for i, future in enumerate(futures):
                        records[i] = future.result()
                except (KeyboardInterrupt, StopRequested) as stop:
                    name = getattr(stop, "signal_name", None) or "SIGINT"
                    self.echo(f"stopped ({name}): asking the running runs to save and stop ...")
                    # SIGTERM whatever the launcher got: after a Ctrl-C at a terminal the runs have had
                    # their own SIGINT, and a second one would stop them without saving
                    self._stop_all()
                    for future in futures:
                        future.cancel()
                    raise StopRequested("the running runs saved their state; run the same command again to "
                                        "resume the sweep", name) from None
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return [r for r in records if r is not None]

    def _forward_stops(self) -> dict[int, Any]:
        """SIGTERM, SIGUSR1 and Ctrl-C stop the sweep in order; returns the handlers they replace."""
        def stop(signum: int, frame: Any) -> None:
            raise StopRequested("stop requested", signal.Signals(signum).name)

        return install_stop_handlers(stop)

    def _run_one(self, index: int, total: int, job: Job) -> dict[str, Any]:
        prefix = f"[{index + 1}/{total}] {job.name}"
        state = run_state(job.run_dir)
        if state == "corrupt":
            aside = set_aside_corrupt_result(job.run_dir)
            self.echo(f"{prefix}: its result.json is corrupt; set aside as {aside}, running it again")
            state = run_state(job.run_dir)
        if state == "finished":
            self.echo(f"{prefix}: finished already, skipped")
            return {"name": job.name, "status": "finished", "skipped": True}
        if self._stopping.is_set():
            return {"name": job.name, "status": "not started", "skipped": True}
        gpu = self._slots.get()
        try:
            where = f" on GPU {gpu}" if gpu is not None else ""
            self.echo(f"{prefix}: {'resuming' if state == 'resumable' else 'starting'}{where}")
            record = self._execute(job, gpu, resumed=state == "resumable")
        finally:
            self._slots.put(gpu)
        self.echo(f"{prefix}: {describe_record(record)}")
        return record

    def _execute(self, job: Job, gpu: str | None, resumed: bool) -> dict[str, Any]:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        files = RunFiles(job.run_dir)
        log_path = files.log
        previous = read_launcher_record(job.run_dir) or {}
        attempt = previous.get("attempt") if isinstance(previous.get("attempt"), int) else 0
        attempt += 1
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        if self.parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(cpu_share(self.parallel))
        started = time.time()
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\n=== attempt {attempt} at {_now()}{f' on GPU {gpu}' if gpu is not None else ''}: "
                      f"{shlex.join(job.command)}\n")
            log.flush()
            log_offset = log.tell()
            exit_code = self._wait(job, log, env)
        record = {
            "name": job.name, "command": list(job.command), "attempt": attempt, "resumed": resumed,
            "gpu": gpu, "started_at": _iso(started), "seconds": round(time.time() - started, 3),
            "exit_code": exit_code, "status": status_from_exit(exit_code, job.run_dir, self._stopping.is_set()),
            "log": str(log_path), "log_tail": read_log_tail(log_path, log_offset),
        }
        atomic_write_json(files.launcher_record, record)
        return record

    def _wait(self, job: Job, log: Any, env: dict[str, str]) -> int:
        try:
            process = subprocess.Popen(job.command, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, preexec_fn=terminate_with_parent)
        except OSError as err:  # e.g. the interpreter does not exist
            log.write(f"could not start: {err}\n")
            return EXIT_CANNOT_START
        with self._lock:
            self._running[job.name] = process
        try:
            return process.wait()
        finally:
            with self._lock:
                self._running.pop(job.name, None)

    @property
    def parallel(self) -> int:
        """How many runs go at once."""
        return len(self.gpus) if self.gpus else self.jobs

    def _stop_all(self) -> None:
        """Pass the stop on as SIGTERM (a run saves and exits 75, or 130 if a terminal's Ctrl-C reached
        it first); kill whatever outlives the grace time."""
        self._stopping.set()
        with self._lock:
            processes = list(self._running.values())
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.time() + STOP_GRACE_S
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                process.kill()


def _find_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None).prctl  # looked up in the launcher: the forked child only calls it
    except (OSError, AttributeError):
        return None


PRCTL = _find_prctl() if sys.platform.startswith("linux") else None


def terminate_with_parent() -> None:
    """In a run's process, before it starts: get SIGTERM when the launcher dies, however it dies, so
    that the run saves and stops instead of going on beside the next launcher's run (Linux only)."""
    if PRCTL is not None:
        PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def cpu_share(runs_at_once: int) -> int:
    """Each of `runs_at_once` runs' share of the CPU cores this process may use (at least one)."""
    return max(1, len(usable_cpus()) // runs_at_once)


def status_from_exit(exit_code: int, run_dir: Path, stopping: bool = False) -> str:
    """finished / preempted (resumable) / interrupted / failed, from the exit code and the run folder."""
    if exit_code == 0:
        # A zero exit without result.json breaks the contract: count it as a failure, not a result.
        return "finished" if run_state(run_dir) == "finished" else "failed"
    if exit_code == EXIT_PREEMPTED:
        return "preempted"
    if stopping or exit_code == EXIT_INTERRUPTED:  # Ctrl-C: the run saved its checkpoint, then exited 130
        return "interrupted"
    return "failed"


def describe_record(record: dict[str, Any]) -> str:
    status = record["status"]
    seconds = record.get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    if status == "finished":
        return f"finished{took}"
    if status in ("preempted", "interrupted"):
        return f"{status}{took} (exit {record['exit_code']}); run the sweep again to resume it"
    return f"{status}{took} (exit {record.get('exit_code')}); see {record.get('log')}"


def read_log_tail(path: Path, offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines written after `offset` (this attempt's output only)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    # Progress bars rewrite their line with carriage returns: keep only what was left visible.
    visible = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(visible[-lines:])


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- SLURM


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of one array task (one run). Cluster-specific options go in `extra_options`."""

    time: str = "12:00:00"
    gres: str | None = "gpu:1"
    cpus_per_task: int = 8
    mem: str | None = None
    partition: str | None = None
    max_parallel: int | None = None  # the array's %K throttle: at most K runs at once
    extra_options: tuple[str, ...] = ()  # raw sbatch options, e.g. "--account=abc"
    job_name: str = "memomentum"


@dataclass(frozen=True)
class SlurmFiles:
    script: Path
    commands: Path
    run_dirs: Path
    logs: Path


def slurm_files(out: Path) -> SlurmFiles:
    folder = Path(out).resolve() / "slurm"
    return SlurmFiles(folder / "sweep.sbatch", folder / "commands.txt", folder / "run_dirs.txt", folder / "logs")


def render_slurm_script(jobs: Sequence[Job], files: SlurmFiles, options: SlurmOptions,
                        cwd: Path = REPO_ROOT) -> str:
    """One sbatch array script: task i runs line i+1 of the commands file."""
    if not jobs:
        raise UserError("no runs to put in a SLURM array")
    throttle = f"%{options.max_parallel}" if options.max_parallel else ""
    directives = [
        f"--job-name={options.job_name}",
        f"--array=0-{len(jobs) - 1}{throttle}",
        f"--output={files.logs}/%A_%a.out",
        # A requeued task appends to its log instead of overwriting the part before the preemption.
        "--open-mode=append",
        "--requeue",
        "--signal=USR1@120",
        f"--time={options.time}",
        "--ntasks=1",
        f"--cpus-per-task={options.cpus_per_task}",
    ]
    if options.gres:
        directives.append(f"--gres={options.gres}")
    if options.mem:
        directives.append(f"--mem={options.mem}")
    if options.partition:
        directives.append(f"--partition={options.partition}")
    directives += list(options.extra_options)
    header = "\n".join(f"#SBATCH {d}" for d in directives)
    return _SLURM_TEMPLATE.format(
        header=header, count=len(jobs), when=_now(), cwd=shlex.quote(str(cwd)),
        commands=shlex.quote(str(files.commands)), run_dirs=shlex.quote(str(files.run_dirs)),
        preempted=EXIT_PREEMPTED, result=RunFiles(".").result.name,
    )


_SLURM_TEMPLATE = """#!/bin/bash
# Generated by reproduce.py at {when}: {count} runs, one array task per run.
# Submit with: sbatch <this file>. Task i runs line i+1 of the commands file.
{header}
#
# Preemption and time limits (the run contract: main.py saves a checkpoint and exits 75 on
# SIGUSR1/SIGTERM; `--resume auto` continues from it):
# - --signal=USR1@120 sends SIGUSR1 120 s before the time limit. Without the "B:" prefix SLURM
#   signals the job steps, not the batch shell, so main.py runs as a step (srun) to receive it.
# - --requeue alone is not enough: it only lets SLURM requeue a job that SLURM itself preempts
#   (PreemptMode=REQUEUE; main.py gets SIGTERM, saves, and SLURM requeues it) or that loses its
#   node. A task that exits on its own, as main.py does with 75, is simply over for SLURM, so
#   the script requeues it with `scontrol requeue` below. --requeue is still needed because
#   scontrol refuses to requeue a job that is not requeueable (clusters with JobRequeue=0).
# - $SLURM_JOB_ID of an array task is that task's own id, so only this run is requeued.

set -uo pipefail
task=${{SLURM_ARRAY_TASK_ID:?submit this script with sbatch (it is a SLURM array job)}}
cd {cwd} || exit 1
line=$((task + 1))
run_dir=$(sed -n "${{line}}p" {run_dirs})
command=$(sed -n "${{line}}p" {commands})
if [ -z "$command" ]; then
    echo "task $task: no line $line in {commands}" >&2
    exit 2
fi
if [ -f "$run_dir/{result}" ]; then
    echo "task $task: $run_dir is finished ({result} exists); nothing to do"
    exit 0
fi
echo "task $task (restart ${{SLURM_RESTART_COUNT:-0}}) on $(hostname) at $(date -Is): $command"
# srun no longer inherits --cpus-per-task from sbatch (SLURM >= 22.05) unless told so.
export SRUN_CPUS_PER_TASK=${{SLURM_CPUS_PER_TASK:-1}}
eval "srun --ntasks=1 $command"
status=$?
if [ "$status" -eq {preempted} ]; then
    echo "task $task: preempted, checkpoint saved; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
"""


def write_slurm_files(jobs: Sequence[Job], out: Path, options: SlurmOptions, cwd: Path = REPO_ROOT) -> SlurmFiles:
    """Write the array script, its commands file (one shell line per run) and run-folder list."""
    files = slurm_files(out)
    files.logs.mkdir(parents=True, exist_ok=True)
    atomic_write_text(files.commands, "".join(shlex.join(job.command) + "\n" for job in jobs))
    atomic_write_text(files.run_dirs, "".join(f"{job.run_dir}\n" for job in jobs))
    atomic_write_text(files.script, render_slurm_script(jobs, files, options, cwd))
    files.script.chmod(0o755)
    return files


def submit_slurm(script: Path, test_only: bool = False) -> str:
    """sbatch the script (or only check it with --test-only); returns sbatch's message."""
    command = ["sbatch", *(["--test-only"] if test_only else []), str(script)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as err:
        raise UserError("sbatch not found: run this on a SLURM login node, or leave out --submit "
                        f"and submit {script} there") from err
    message = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise UserError(f"sbatch failed (exit {done.returncode}): {' '.join(message.split())}")
    return message


def default_python() -> str:
    return sys.executable or "python"

