"""Sweeps of many runs (reproduce.py): grids, run naming, commands, the local launcher, SLURM scripts.

A grid (configs/<name>.json) lists settings (dataset, noise type, noise rate, extra flags, the
paper's number); a sweep runs every (setting, method, seed) once, each in its own run folder
`<out>/<setting>-seed<S>-<method>` through the run contract of main.py: `--resume auto`
continues an unfinished run, `result.json` marks a finished one, exit code 75 means
"preempted, run me again".

Nothing here schedules work across machines: locally runs go one after another (or one per
GPU); on a cluster SLURM does the scheduling from one generated array script.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
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

from data.presets import HUMAN_NOISE_TYPES, PRESETS, noise_types_for
from utils.run.atomic import atomic_write_json, atomic_write_text
from utils.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"
PREEMPTED_EXIT_CODE = 75  # the run contract (utils/preemption.py): saved, resumable, requeue it
ENTRY_POINTS = ("main.py", "Clothing.py")
METHODS = ("memomentum", "ce")
CLOTHING_DATASET, CLOTHING_NOISE = "clothing1m", "real"
SWEEP_FILE = "sweep.json"
LAUNCHER_FILE = "launcher.json"
LOG_FILE = "run.log"
LOG_TAIL_LINES = 30
STOP_GRACE_S = 60.0  # how long an interrupted run may take to save its checkpoint before it is killed

# Flags the sweep sets itself; a grid that set them would silently fight the run naming.
RESERVED_FLAGS = frozenset({"dataset", "noise_type", "noise_rate", "method", "seed", "output_dir", "resume"})
GRID_KEYS = frozenset({"description", "entry_point", "methods", "flags", "settings"})
SETTING_KEYS = frozenset({"dataset", "noise_type", "noise_rate", "flags", "paper_test_acc", "paper_source"})

FlagValue = str | int | float | bool


# --------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class Setting:
    """One row of a results table: a dataset under one kind and rate of label noise."""

    dataset: str
    noise_type: str
    noise_rate: float | None  # None for real noise (CIFAR-N, Clothing1M): the labels fix the rate
    flags: tuple[tuple[str, FlagValue], ...] = ()
    paper_test_acc: float | None = None
    paper_source: str | None = None

    @property
    def key(self) -> str:
        """Stable identifier, also the prefix of the run folders: cifar10-symmetric-0.2."""
        parts = [self.dataset, self.noise_type]
        if self.noise_rate is not None:
            parts.append(format_rate(self.noise_rate))
        return "-".join(parts)

    @property
    def label(self) -> str:
        """How papers name the setting: 'CIFAR-10 Sym-20%', 'CIFAR-10N Worst'."""
        return setting_label(self.dataset, self.noise_type, self.noise_rate)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "noise_type": self.noise_type, "noise_rate": self.noise_rate,
                "flags": dict(self.flags), "paper_test_acc": self.paper_test_acc,
                "paper_source": self.paper_source}


@dataclass(frozen=True)
class Grid:
    """A named list of settings, run through one entry point with the given methods."""

    name: str
    description: str
    entry_point: str
    methods: tuple[str, ...]
    settings: tuple[Setting, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "entry_point": self.entry_point,
                "methods": list(self.methods), "settings": [s.to_dict() for s in self.settings]}


@dataclass(frozen=True)
class Run:
    """One training run of a sweep: a setting, a method, a seed."""

    setting: Setting
    method: str
    seed: int

    @property
    def name(self) -> str:
        # Same order as main.py's default run folder: {dataset}-{noise_type}-{noise_rate}-seed{seed}-{method}
        return f"{self.setting.key}-seed{self.seed}-{self.method}"


@dataclass(frozen=True)
class Job:
    """A run with its folder and the exact command that performs it."""

    name: str
    run_dir: Path
    command: tuple[str, ...]
    run: Run | None = None  # None for jobs built by hand (tests)


def format_rate(rate: float) -> str:
    """0.2 → '0.2', as Python prints the float main.py receives (so folder names match its own)."""
    return repr(float(rate))


def setting_label(dataset: str, noise_type: str, noise_rate: float | None) -> str:
    names = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "Digits",
             "clothing1m": "Clothing1M"}
    kinds = {"symmetric": "Sym", "pairflip": "Pair", "instance": "IDN"}
    human = {"aggre": "Aggregate", "random1": "Random 1", "random2": "Random 2", "random3": "Random 3",
             "worst": "Worst", "noisy": "Noisy"}
    if noise_type in human:
        return f"{names.get(dataset, dataset)}N {human[noise_type]}"
    if dataset == CLOTHING_DATASET:
        return names[dataset]
    rate = "" if noise_rate is None else f"-{100 * noise_rate:g}%"
    return f"{names.get(dataset, dataset)} {kinds.get(noise_type, noise_type)}{rate}"


def available_grids() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.json"))


def resolve_grid_path(grid: str) -> Path:
    """A grid name in configs/ (e.g. 'paper') or a path to a grid file."""
    named = CONFIGS_DIR / f"{grid}.json"
    if named.is_file():
        return named
    path = Path(grid)
    if path.is_file():
        return path
    raise UserError(f"no grid {grid!r}: not a name in {CONFIGS_DIR} ({', '.join(available_grids())}) "
                    f"nor an existing file")


def load_grid(grid: str) -> Grid:
    """Read and validate a grid file; every mistake is a UserError naming the file and the entry."""
    path = resolve_grid_path(grid)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"grid {path} is not valid JSON: {err}") from err
    return parse_grid(raw, name=path.stem, where=str(path))


def parse_grid(raw: Any, name: str, where: str) -> Grid:
    if not isinstance(raw, dict):
        raise UserError(f"grid {where}: expected a JSON object with 'settings', got {type(raw).__name__}")
    _refuse_unknown_keys(raw, GRID_KEYS, f"grid {where}")
    entry_point = raw.get("entry_point", "main.py")
    if entry_point not in ENTRY_POINTS:
        raise UserError(f"grid {where}: entry_point must be one of {', '.join(ENTRY_POINTS)}, got {entry_point!r}")
    methods = tuple(raw.get("methods", METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise UserError(f"grid {where}: methods must be a non-empty list of {', '.join(METHODS)}, got {list(methods)}")
    grid_flags = _parse_flags(raw.get("flags", {}), f"grid {where}")
    entries = raw.get("settings")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"grid {where}: 'settings' must be a non-empty list of settings")
    settings = tuple(_parse_setting(entry, i, where, entry_point, grid_flags) for i, entry in enumerate(entries))
    _refuse_duplicates(settings, where)
    return Grid(name=name, description=str(raw.get("description", "")), entry_point=entry_point,
                methods=methods, settings=settings)


def _parse_setting(entry: Any, index: int, where: str, entry_point: str,
                   grid_flags: dict[str, FlagValue]) -> Setting:
    context = f"grid {where}, setting {index}"
    if not isinstance(entry, dict):
        raise UserError(f"{context}: expected an object with dataset, noise_type, noise_rate")
    _refuse_unknown_keys(entry, SETTING_KEYS, context)
    for key in ("dataset", "noise_type"):
        if not isinstance(entry.get(key), str):
            raise UserError(f"{context}: '{key}' is required and must be a string")
    dataset, noise_type = entry["dataset"], entry["noise_type"]
    context = f"{context} ({dataset} {noise_type})"
    _check_dataset_and_noise(dataset, noise_type, entry_point, context)
    noise_rate = _parse_noise_rate(entry.get("noise_rate"), dataset, noise_type, context)
    flags = {**grid_flags, **_parse_flags(entry.get("flags", {}), context)}
    paper, source = _parse_paper(entry.get("paper_test_acc"), entry.get("paper_source"), context)
    return Setting(dataset, noise_type, noise_rate, tuple(flags.items()), paper, source)


def _check_dataset_and_noise(dataset: str, noise_type: str, entry_point: str, context: str) -> None:
    if entry_point == "Clothing.py":
        if (dataset, noise_type) != (CLOTHING_DATASET, CLOTHING_NOISE):
            raise UserError(f"{context}: Clothing.py grids hold only dataset "
                            f"{CLOTHING_DATASET!r} with noise_type {CLOTHING_NOISE!r}")
        return
    if dataset not in PRESETS:
        raise UserError(f"{context}: unknown dataset {dataset!r}; main.py knows {', '.join(PRESETS)} "
                        f"(Clothing1M needs \"entry_point\": \"Clothing.py\")")
    kinds = noise_types_for(dataset)
    if noise_type not in kinds:
        raise UserError(f"{context}: noise type {noise_type!r} is not available for {dataset}; "
                        f"choose one of {', '.join(kinds)}")


def _parse_noise_rate(value: Any, dataset: str, noise_type: str, context: str) -> float | None:
    real_noise = noise_type in HUMAN_NOISE_TYPES.get(dataset, ()) or dataset == CLOTHING_DATASET
    if real_noise:
        if value is not None:
            raise UserError(f"{context}: real label noise has no noise_rate (the label file fixes it); "
                            f"use null")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise UserError(f"{context}: noise_rate must be a number in [0, 1), got {value!r}")
    return float(value)


def _parse_flags(value: Any, context: str) -> dict[str, FlagValue]:
    if not isinstance(value, dict):
        raise UserError(f"{context}: 'flags' must be an object of flag names to values, e.g. {{\"n_epoch\": 20}}")
    for flag, flag_value in value.items():
        if flag.startswith("-"):
            raise UserError(f"{context}: write flag names without dashes ('n_epoch', not {flag!r})")
        if flag in RESERVED_FLAGS:
            raise UserError(f"{context}: flag {flag!r} is set by the sweep itself and cannot be in a grid")
        if not isinstance(flag_value, (str, int, float, bool)):
            raise UserError(f"{context}: flag {flag!r} must be a string, number or boolean, got {flag_value!r}")
    return dict(value)


def _parse_paper(value: Any, source: Any, context: str) -> tuple[float | None, str | None]:
    if value is None:
        return None, source if isinstance(source, str) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 100.0:
        raise UserError(f"{context}: paper_test_acc must be a percentage in [0, 100] or null, got {value!r}")
    if not isinstance(source, str) or not source.strip():
        raise UserError(f"{context}: a paper_test_acc needs its paper_source (e.g. \"Bai & Liu 2021, Table 1\")")
    return float(value), source


def _refuse_unknown_keys(obj: dict, allowed: frozenset[str], context: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise UserError(f"{context}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _refuse_duplicates(settings: Sequence[Setting], where: str) -> None:
    seen: set[str] = set()
    for setting in settings:
        if setting.key in seen:
            raise UserError(f"grid {where}: setting {setting.key} appears twice (run folders would collide)")
        seen.add(setting.key)


# --------------------------------------------------------------------------- runs and commands


def expand_runs(grid: Grid, methods: Sequence[str] | None, seeds: Sequence[int]) -> list[Run]:
    """Every (setting, method, seed), settings outermost so that a table fills row by row."""
    chosen = tuple(methods) if methods else grid.methods
    refused = [m for m in chosen if m not in grid.methods]
    if refused:
        raise UserError(f"grid {grid.name} runs only {', '.join(grid.methods)}; not {', '.join(refused)}")
    if not seeds:
        raise UserError("give at least one seed (--seeds 1 2 3)")
    if len(set(seeds)) != len(seeds) or len(set(chosen)) != len(chosen):
        raise UserError(f"seeds and methods must not repeat (got seeds {list(seeds)}, methods {list(chosen)})")
    return [Run(s, m, seed) for s in grid.settings for m in chosen for seed in seeds]


def select_settings(grid: Grid, only: Sequence[str] | None) -> Grid:
    """Keep the settings named by `only`: a full key (cifar10-symmetric-0.2) or a prefix of whole
    parts (cifar10, cifar10-symmetric; 'cifar10' does not select cifar100)."""
    if not only:
        return grid
    unmatched = [o for o in only if not any(_key_matches(s.key, o) for s in grid.settings)]
    if unmatched:
        keys = ", ".join(s.key for s in grid.settings)
        raise UserError(f"--only {' '.join(unmatched)} selects no setting of grid {grid.name}; its settings: {keys}")
    kept = tuple(s for s in grid.settings if any(_key_matches(s.key, o) for o in only))
    return dataclasses.replace(grid, settings=kept)


def _key_matches(key: str, selector: str) -> bool:
    return key == selector or key.startswith(selector + "-")


def flag_arguments(flags: Sequence[tuple[str, FlagValue]]) -> list[str]:
    """{'amp': True, 'n_epoch': 20} → ['--amp', '--n_epoch', '20']; False switches are left out."""
    args: list[str] = []
    for name, value in flags:
        if value is True:
            args.append(f"--{name}")
        elif value is not False:
            args += [f"--{name}", str(value)]
    return args


def build_command(grid: Grid, run: Run, run_dir: Path, python: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The command line of one run, to be started from the repository root."""
    command = [python, grid.entry_point]
    if grid.entry_point == "main.py":  # Clothing.py has one dataset, one kind of noise, one method
        command += ["--dataset", run.setting.dataset, "--noise_type", run.setting.noise_type]
        if run.setting.noise_rate is not None:
            command += ["--noise_rate", format_rate(run.setting.noise_rate)]
        command += ["--method", run.method]
    command += ["--seed", str(run.seed)]
    # A flag given in `extra` replaces the grid's value (e.g. a shorter --n_epoch for a quick check).
    overridden = flag_names(extra)
    command += flag_arguments([(name, value) for name, value in run.setting.flags if name not in overridden])
    command += ["--output_dir", str(run_dir), "--resume", "auto"]
    command += list(extra)
    return tuple(command)


def flag_names(tokens: Sequence[str]) -> set[str]:
    """['--n_epoch', '2', '--amp', '--lr=0.1'] → {'n_epoch', 'amp', 'lr'}."""
    return {token[2:].split("=", 1)[0] for token in tokens if token.startswith("--") and len(token) > 2}


def build_jobs(grid: Grid, runs: Sequence[Run], out: Path, python: str, extra: Sequence[str] = ()) -> list[Job]:
    out = Path(out).resolve()
    return [Job(run.name, out / run.name, build_command(grid, run, out / run.name, python, extra), run)
            for run in runs]


def parse_extra(extra: Sequence[str] | None) -> list[str]:
    """--extra "--amp --n_epoch 2" (given once or more) → ['--amp', '--n_epoch', '2']."""
    return [token for chunk in (extra or ()) for token in shlex.split(chunk)]


# --------------------------------------------------------------------------- run folders


def run_state(run_dir: Path) -> str:
    """'finished' (result.json), 'resumable' (checkpoint.pt without result.json) or 'new'."""
    run_dir = Path(run_dir)
    if (run_dir / "result.json").is_file():
        return "finished"
    if (run_dir / "checkpoint.pt").is_file():
        return "resumable"
    return "new"


def write_sweep_record(out: Path, grid: Grid, runs: Sequence[Run]) -> Path:
    """Record what the sweep contains, so --summarize lists missing runs instead of dropping them.

    Merged with an earlier record in the same folder: adding seeds later keeps the earlier runs.
    """
    path = Path(out) / SWEEP_FILE
    previous = read_sweep_record(out) if path.is_file() else None
    settings: dict[str, dict] = {}
    entries: dict[str, dict] = {}
    if previous and previous.get("grid", {}).get("name") == grid.name:
        settings = {Setting(**_setting_args(s)).key: s for s in previous["grid"].get("settings", [])}
        entries = {r["name"]: r for r in previous.get("runs", [])}
    settings.update({s.key: s.to_dict() for s in grid.settings})
    entries.update({r.name: {"name": r.name, "setting": r.setting.key, "method": r.method, "seed": r.seed}
                    for r in runs})
    record = {"grid": {**grid.to_dict(), "settings": list(settings.values())},
              "methods": sorted({e["method"] for e in entries.values()}, key=_method_order),
              "seeds": sorted({e["seed"] for e in entries.values()}),
              "runs": list(entries.values())}
    return atomic_write_json(path, record)


def read_sweep_record(out: Path) -> dict[str, Any] | None:
    path = Path(out) / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); delete it to summarise the run folders alone") from err


def settings_from_record(record: dict[str, Any]) -> list[Setting]:
    return [Setting(**_setting_args(s)) for s in record["grid"]["settings"]]


def _setting_args(entry: dict[str, Any]) -> dict[str, Any]:
    args = dict(entry)
    args["flags"] = tuple(dict(entry.get("flags") or {}).items())
    return args


def _method_order(method: str) -> tuple[int, str]:
    return (METHODS.index(method) if method in METHODS else len(METHODS), method)


# --------------------------------------------------------------------------- local launcher


@dataclass
class LocalLauncher:
    """Runs jobs as subprocesses: one at a time, or one per entry of `gpus` at once.

    Finished runs are skipped, unfinished ones resumed (the command carries --resume auto), and
    a failed run is recorded in <run>/launcher.json while the sweep goes on.
    """

    gpus: Sequence[str] | None = None
    cwd: Path = REPO_ROOT
    echo: Callable[[str], None] = print
    _slots: "queue.Queue[str | None]" = field(default_factory=queue.Queue, init=False)
    _running: dict[str, subprocess.Popen] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)

    def run_all(self, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        """Run every job; returns one launcher record per job, in the order of `jobs`."""
        slots = list(self.gpus) if self.gpus else [None]
        for slot in slots:
            self._slots.put(slot)
        records: list[dict[str, Any] | None] = [None] * len(jobs)
        with ThreadPoolExecutor(max_workers=len(slots)) as pool:
            futures = [pool.submit(self._run_one, i, len(jobs), job) for i, job in enumerate(jobs)]
            try:
                for i, future in enumerate(futures):
                    records[i] = future.result()
            except KeyboardInterrupt:
                self.echo("interrupted: asking the running runs to save and stop ...")
                self._stop_all()
                for future in futures:
                    future.cancel()
                raise
        return [r for r in records if r is not None]

    def _run_one(self, index: int, total: int, job: Job) -> dict[str, Any]:
        prefix = f"[{index + 1}/{total}] {job.name}"
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
        log_path = job.run_dir / LOG_FILE
        previous = read_launcher_record(job.run_dir)
        attempt = int(previous.get("attempt", 0)) + 1 if previous else 1
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
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
        atomic_write_json(job.run_dir / LAUNCHER_FILE, record)
        return record

    def _wait(self, job: Job, log: Any, env: dict[str, str]) -> int:
        try:
            process = subprocess.Popen(job.command, cwd=self.cwd, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except OSError as err:  # e.g. the interpreter does not exist
            log.write(f"could not start: {err}\n")
            return 127
        with self._lock:
            self._running[job.name] = process
        try:
            return process.wait()
        finally:
            with self._lock:
                self._running.pop(job.name, None)

    def _stop_all(self) -> None:
        """SIGTERM lets main.py save and exit 75 (resumable); kill whatever outlives the grace time."""
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


def status_from_exit(exit_code: int, run_dir: Path, stopping: bool = False) -> str:
    """finished / preempted (resumable) / interrupted / failed, from the exit code and the run folder."""
    if exit_code == 0:
        # A zero exit without result.json breaks the contract: count it as a failure, not a result.
        return "finished" if run_state(run_dir) == "finished" else "failed"
    if exit_code == PREEMPTED_EXIT_CODE:
        return "preempted"
    if stopping:
        return "interrupted"
    return "failed"


def describe_record(record: dict[str, Any]) -> str:
    status = record["status"]
    seconds = record.get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    if status == "finished":
        return f"finished{took}"
    if status == "preempted":
        return f"preempted{took} (exit {record['exit_code']}); run the sweep again to resume it"
    return f"{status}{took} (exit {record.get('exit_code')}); see {record.get('log')}"


def read_launcher_record(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / LAUNCHER_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


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
        preempted=PREEMPTED_EXIT_CODE,
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
if [ -f "$run_dir/result.json" ]; then
    echo "task $task: $run_dir is finished (result.json exists); nothing to do"
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

