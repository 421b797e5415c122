"""Grids of a sweep (reproduce.py): grid files, settings, run naming, the jobs and their commands,
and the sweep record (sweep.json).

A grid (configs/<name>.json) lists settings (dataset, noise type, noise rate, extra flags, the
paper's number); a sweep runs every (setting, method, seed) once, each in its own run folder
`<out>/<setting>-seed<S>-<method>`, with the command that main.py (or Clothing.py) runs it by.
Every grid, flag and seed is checked here, before anything is written: a mistake is one
UserError naming the file and the entry. Running the jobs is utils/sweeps/launchers.py.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from data.cifarn import CIFARN_TITLES
from data.datasets import DATASETS, is_human_noise, noise_types_for
from data.noise import NOISE_TYPES
from utils.errors import UserError
from utils.methods import METHODS, flag_methods, method_order
from utils.run.atomic import atomic_write_json

REPO_ROOT = Path(__file__).resolve().parents[2]  # this file is utils/sweeps/grid.py
CONFIGS_DIR = REPO_ROOT / "configs"
ENTRY_POINTS = ("main.py", "Clothing.py")
CLOTHING_DATASET, CLOTHING_NOISE = "clothing1m", "real"
SWEEP_FILE = "sweep.json"
SEED_LIMIT = 2 ** 32  # numpy and torch accept seeds 0 <= seed < 2**32

# Flags the sweep sets itself; a grid that set them would silently fight the run naming.
RESERVED_FLAGS = frozenset({"dataset", "noise_type", "noise_rate", "method", "seed", "output_dir", "resume",
                            "model_dir"})
GRID_KEYS = frozenset({"description", "entry_point", "methods", "flags", "settings"})
SETTING_KEYS = frozenset({"dataset", "noise_type", "noise_rate", "flags", "paper_test_acc", "paper_source"})
FLAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # a plain folder name: no '/', not '..'
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")  # a newline would split a line of commands.txt

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


def has_real_noise(dataset: str, noise_type: str) -> bool:
    """Whether the labels themselves fix the noise (CIFAR-N, Clothing1M): no noise rate applies."""
    return dataset == CLOTHING_DATASET or is_human_noise(dataset, noise_type)


def setting_label(dataset: str, noise_type: str, noise_rate: float | None) -> str:
    """How papers name a setting, from the registries: 'CIFAR-10 Sym-20%', 'CIFAR-10N Worst', 'Clothing1M'."""
    if dataset == CLOTHING_DATASET:
        return "Clothing1M"
    name = DATASETS[dataset].title if dataset in DATASETS else dataset
    if is_human_noise(dataset, noise_type):
        return f"{name}N {CIFARN_TITLES.get(noise_type, noise_type)}"
    kind = NOISE_TYPES[noise_type].title if noise_type in NOISE_TYPES else noise_type
    rate = "" if noise_rate is None else f"-{100 * noise_rate:g}%"
    return f"{name} {kind}{rate}"


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
    return parse_grid(read_json(path, f"grid {path}"), name=path.stem, where=str(path))


def read_json(path: Path, what: str) -> Any:
    """The JSON value in `path`; any unreadable, non-UTF-8 or non-JSON content is a UserError."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as err:
        raise UserError(f"{what} is unreadable ({err.strerror})") from err
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{what} is not valid JSON: {' '.join(str(err).split())[:100]}") from err


def parse_grid(raw: Any, name: str, where: str) -> Grid:
    if not isinstance(raw, dict):
        raise UserError(f"grid {where}: expected a JSON object with 'settings', got {type(raw).__name__}")
    _refuse_unknown_keys(raw, GRID_KEYS, f"grid {where}")
    entry_point = raw.get("entry_point", "main.py")
    if not isinstance(entry_point, str) or entry_point not in ENTRY_POINTS:
        raise UserError(f"grid {where}: entry_point must be one of {', '.join(ENTRY_POINTS)}, got {entry_point!r}")
    methods = raw.get("methods", list(METHODS))
    if (not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods)
            or any(m not in METHODS for m in methods) or len(set(methods)) != len(methods)):
        raise UserError(f"grid {where}: methods must be a non-empty list of {', '.join(METHODS)} "
                        f"(each once), got {methods!r}")
    methods = tuple(methods)
    if not isinstance(raw.get("description", ""), str):
        raise UserError(f"grid {where}: 'description' must be a string")
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
    if dataset not in DATASETS:
        raise UserError(f"{context}: unknown dataset {dataset!r}; main.py knows {', '.join(DATASETS)} "
                        f"(Clothing1M needs \"entry_point\": \"Clothing.py\")")
    kinds = noise_types_for(dataset)
    if noise_type not in kinds:
        raise UserError(f"{context}: noise type {noise_type!r} is not available for {dataset}; "
                        f"choose one of {', '.join(kinds)}")


def _parse_noise_rate(value: Any, dataset: str, noise_type: str, context: str) -> float | None:
    if has_real_noise(dataset, noise_type):
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
        if not FLAG_NAME.fullmatch(flag):
            raise UserError(f"{context}: {flag!r} is not a flag name (letters, digits, '_')")
        if flag in RESERVED_FLAGS:
            raise UserError(f"{context}: flag {flag!r} is set by the sweep itself and cannot be in a grid")
        if not isinstance(flag_value, (str, int, float, bool)):
            raise UserError(f"{context}: flag {flag!r} must be a string, number or boolean, got {flag_value!r}")
        if isinstance(flag_value, float) and not math.isfinite(flag_value):
            raise UserError(f"{context}: flag {flag!r} must be a finite number, got {flag_value!r}")
        if isinstance(flag_value, str) and CONTROL_CHARACTERS.search(flag_value):
            raise UserError(f"{context}: flag {flag!r} holds a control character (e.g. a newline)")
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
    check_seeds(seeds)
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


def check_seeds(seeds: Sequence[int]) -> None:
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < SEED_LIMIT]
    if bad:
        raise UserError(f"seed {bad[0]!r} is out of range: seeds must be whole numbers with "
                        f"0 <= seed < 2**32 (what numpy and torch accept)")


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
    if grid.entry_point == "main.py":  # Clothing.py has one dataset and one kind of noise
        command += ["--dataset", run.setting.dataset, "--noise_type", run.setting.noise_type]
        if run.setting.noise_rate is not None:
            command += ["--noise_rate", format_rate(run.setting.noise_rate)]
    command += ["--method", run.method]
    command += ["--seed", str(run.seed)]
    # A flag given in `extra` replaces the grid's value (e.g. a shorter --n_epoch for a quick check);
    # a flag one method adds (Co-teaching's --forget_rate) goes to that method's runs only.
    # and a flag a method never reads (--max_inner_loop for CE) is left out of its runs, which refuse it.
    owners = flag_methods()
    unread = set(METHODS[run.method].unread_flags)

    def for_this_method(name: str) -> bool:
        return run.method in owners.get(name, (run.method,)) and name not in unread

    extra_groups = [(name, tokens) for name, tokens in flag_groups(extra) if for_this_method(name)]
    overridden = {name for name, _ in extra_groups}
    command += flag_arguments([(name, value) for name, value in run.setting.flags
                               if name not in overridden and for_this_method(name)])
    # Each run its own weight-file folder: runs of a sweep never share a file.
    command += ["--output_dir", str(run_dir), "--model_dir", str(run_dir / "model"), "--resume", "auto"]
    command += [token for _, tokens in extra_groups for token in tokens]
    return tuple(command)


def flag_groups(tokens: Sequence[str]) -> list[tuple[str, list[str]]]:
    """['--lr', '0.1', '--amp'] → [('lr', ['--lr', '0.1']), ('amp', ['--amp'])]: each flag with its values."""
    groups: list[tuple[str, list[str]]] = []
    for token in tokens:
        if token.startswith("--") and len(token) > 2:
            groups.append((token[2:].split("=", 1)[0], [token]))
        elif groups:
            groups[-1][1].append(token)
    return groups


def flag_names(tokens: Sequence[str]) -> set[str]:
    """['--n_epoch', '2', '--amp', '--lr=0.1'] → {'n_epoch', 'amp', 'lr'}."""
    return {name for name, _ in flag_groups(tokens)}


def entry_point_flags(entry_point: str) -> set[str]:
    """Every flag of main.py or Clothing.py, as written in full."""
    from utils.clothing_config import ClothingConfig  # the configurations import torch: only when needed
    from utils.run.config import build_parser
    from utils.train_config import TrainConfig

    config = TrainConfig if entry_point == "main.py" else ClothingConfig
    return {flag[2:] for action in build_parser(config, "")._actions for flag in action.option_strings}


def check_flag_names(grid: Grid, extra: Sequence[str], methods: Sequence[str] = ()) -> None:
    """Every flag of the grid and of --extra must be a flag of the entry point, written in full: a
    misspelt or shortened flag would otherwise make runs with settings other than their folder's.
    A flag one method adds needs that method among the sweep's `methods`, or it would reach no run."""
    known = entry_point_flags(grid.entry_point)
    owners = flag_methods()

    def check(name: str, where: str) -> None:
        if name not in known:
            raise UserError(f"{where}: {grid.entry_point} has no flag --{name} (flags are written in full)")
        if methods and name in owners and not set(owners[name]) & set(methods):
            raise UserError(f"{where}: --{name} is a flag of --method {' and '.join(owners[name])}, which this sweep "
                            f"does not run (its methods: {', '.join(methods)})")

    for name in sorted(flag_names(extra)):
        check(name, f"--extra --{name}")
    for setting in grid.settings:
        for name, _ in setting.flags:
            check(name, f"grid {grid.name}, setting {setting.key}")


def build_jobs(grid: Grid, runs: Sequence[Run], out: Path, python: str, extra: Sequence[str] = ()) -> list[Job]:
    check_flag_names(grid, extra, sorted({run.method for run in runs}, key=method_order))
    out = Path(out).resolve()
    return [Job(run.name, out / run.name, build_command(grid, run, out / run.name, python, extra), run)
            for run in runs]


def parse_extra(extra: Sequence[str] | None) -> list[str]:
    """--extra "--amp --n_epoch 2" (given once or more) → ['--amp', '--n_epoch', '2'], checked: flags
    first, quotes closed, no control characters, none of the flags the sweep sets itself."""
    tokens: list[str] = []
    for chunk in extra or ():
        if CONTROL_CHARACTERS.search(chunk):
            raise UserError(f"--extra {chunk!r}: holds a control character (e.g. a newline)")
        try:
            words = shlex.split(chunk)
        except ValueError as err:  # e.g. an unclosed quote
            raise UserError(f"--extra {chunk!r}: {err} (quote it as you would in a shell)") from err
        if words and not words[0].startswith("--"):
            raise UserError(f"--extra {chunk!r}: must start with a flag, e.g. --extra \"--n_epoch 2\"")
        tokens += words
    reserved = sorted(flag_names(tokens) & RESERVED_FLAGS)
    if reserved:
        raise UserError(f"--extra sets --{reserved[0]}, which the sweep sets itself for every run")
    return tokens


# --------------------------------------------------------------------------- the sweep record


def write_sweep_record(out: Path, grid: Grid, runs: Sequence[Run]) -> Path:
    """Record what the sweep contains, so --summarize lists missing runs instead of dropping them.

    Merged with an earlier record in the same folder: adding seeds later keeps the earlier runs.
    """
    path = Path(out) / SWEEP_FILE
    previous = read_sweep_record(out)
    if previous and previous["grid"].get("name") != grid.name:
        raise UserError(f"{path} records a sweep of grid {previous['grid'].get('name')!r}; a sweep of grid "
                        f"{grid.name!r} would replace it and drop its runs from the tables: use the same --grid, "
                        f"or another --out")
    settings: dict[str, dict] = {}
    entries: dict[str, dict] = {}
    if previous:
        settings = {s.key: s.to_dict() for s in settings_from_record(previous)}
        entries = {r["name"]: r for r in previous["runs"]}
    settings.update({s.key: s.to_dict() for s in grid.settings})
    entries.update({r.name: {"name": r.name, "setting": r.setting.key, "method": r.method, "seed": r.seed}
                    for r in runs})
    record = {"grid": {**grid.to_dict(), "settings": list(settings.values())},
              "methods": sorted({e["method"] for e in entries.values()}, key=method_order),
              "seeds": sorted({e["seed"] for e in entries.values()}),
              "runs": list(entries.values())}
    return atomic_write_json(path, record)


def read_sweep_record(out: Path) -> dict[str, Any] | None:
    """sweep.json of the sweep folder `out`, checked; None when there is none."""
    path = Path(out) / SWEEP_FILE
    if not path.is_file():
        return None
    advice = "delete it to summarise the run folders alone"
    try:
        record = read_json(path, str(path))
        _check_sweep_record(record, str(path))
    except UserError as error:
        raise UserError(f"{error}; {advice}") from error
    return record


def _check_sweep_record(record: Any, where: str) -> None:
    """The record must be as write_sweep_record wrote it: its settings valid, its runs named plainly."""
    if not isinstance(record, dict) or not isinstance(record.get("grid"), dict) \
            or not isinstance(record.get("runs"), list):
        raise UserError(f"{where} is corrupt: expected an object with 'grid' and 'runs'")
    grid = record["grid"]
    if not isinstance(grid.get("name", ""), str):
        raise UserError(f"{where} is corrupt: the grid's name is not a string")
    parsed = parse_grid({k: v for k, v in grid.items() if k in GRID_KEYS}, grid.get("name", ""), where)
    keys = {s.key for s in parsed.settings}
    for index, run in enumerate(record["runs"]):
        if not (isinstance(run, dict) and isinstance(run.get("name"), str) and RUN_NAME.fullmatch(run["name"])
                and run.get("setting") in keys and run.get("method") in METHODS
                and isinstance(run.get("seed"), int) and not isinstance(run.get("seed"), bool)):
            raise UserError(f"{where} is corrupt: run {index} is not {{name, setting, method, seed}} "
                            f"of this grid")


def settings_from_record(record: dict[str, Any]) -> list[Setting]:
    """The settings of a (checked) sweep record."""
    grid = record["grid"]
    return list(parse_grid({k: v for k, v in grid.items() if k in GRID_KEYS}, grid.get("name", ""),
                           SWEEP_FILE).settings)
