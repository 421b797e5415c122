"""Tests for utils/sweeps/launchers.py: the local launcher on fake runs, SLURM array scripts."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.sweeps.test_grid import PYTHON, quiet, small_grid
from utils.errors import UserError
from utils.sweeps.grid import Job, build_jobs, expand_runs, parse_grid
from utils.sweeps.launchers import (
    LocalLauncher,
    SlurmOptions,
    render_slurm_script,
    slurm_files,
    write_slurm_files,
)
from utils.sweeps.outcomes import read_launcher_record, run_state


# --------------------------------------------------------------------------- local launcher (fake runs)

# A stand-in for main.py that follows the run contract: behaviour chosen by its first argument.
FAKE_RUN = textwrap.dedent("""
    import json, os, sys, time
    behaviour, run_dir = sys.argv[1], sys.argv[2]
    os.makedirs(run_dir, exist_ok=True)
    resumed = os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    print("fake run", behaviour, "resumed" if resumed else "fresh", flush=True)
    if behaviour == "sleep":
        time.sleep(1.0)
    if behaviour in ("ok", "sleep"):
        result = {"test_acc": 50.0, "resumed": resumed, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  "threads": os.environ.get("OMP_NUM_THREADS"), "start": time.time()}
        json.dump(result, open(os.path.join(run_dir, "result.json"), "w"))
        sys.exit(0)
    if behaviour == "nan":
        print("loss is nan at epoch 3", file=sys.stderr)
        sys.exit(3)
    if behaviour == "preempt":
        open(os.path.join(run_dir, "checkpoint.pt"), "w").write("state")
        sys.exit(75)
    if behaviour == "ctrl-c":
        open(os.path.join(run_dir, "checkpoint.pt"), "w").write("state")
        sys.exit(130)
    sys.exit(0)  # "silent": exits 0 without result.json
""")


def fake_job(tmp_path: Path, name: str, behaviour: str) -> Job:
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN)
    run_dir = tmp_path / "sweep" / name
    return Job(name, run_dir, (PYTHON, str(script), behaviour, str(run_dir)))


def test_launcher_records_outcomes_and_continues_after_failures(tmp_path: Path) -> None:
    jobs = [fake_job(tmp_path, "a", "nan"), fake_job(tmp_path, "b", "ok"), fake_job(tmp_path, "c", "preempt"),
            fake_job(tmp_path, "d", "silent"), fake_job(tmp_path, "e", "ctrl-c")]
    records = LocalLauncher(echo=quiet).run_all(jobs)
    assert [r["status"] for r in records] == ["failed", "finished", "preempted", "failed", "interrupted"]
    assert [r["exit_code"] for r in records] == [3, 0, 75, 0, 130]
    failed = read_launcher_record(jobs[0].run_dir)
    assert failed["status"] == "failed" and failed["exit_code"] == 3
    assert "loss is nan at epoch 3" in failed["log_tail"]
    assert "loss is nan" in (jobs[0].run_dir / "run.log").read_text()
    assert run_state(jobs[1].run_dir) == "finished"
    assert run_state(jobs[2].run_dir) == "resumable"


def test_launcher_skips_finished_and_resumes_unfinished(tmp_path: Path) -> None:
    finished = fake_job(tmp_path, "finished", "nan")  # would fail if it were run
    finished.run_dir.mkdir(parents=True)
    (finished.run_dir / "result.json").write_text('{"test_acc": 1.0}')
    unfinished = fake_job(tmp_path, "unfinished", "ok")
    unfinished.run_dir.mkdir(parents=True)
    (unfinished.run_dir / "checkpoint.pt").write_text("state")
    records = LocalLauncher(echo=quiet).run_all([finished, unfinished])
    assert records[0] == {"name": "finished", "status": "finished", "skipped": True}
    assert not (finished.run_dir / "run.log").exists()
    assert records[1]["status"] == "finished" and records[1]["resumed"] is True
    assert json.loads((unfinished.run_dir / "result.json").read_text())["resumed"] is True


def test_launcher_runs_again_a_run_whose_result_is_corrupt(tmp_path: Path) -> None:
    job = fake_job(tmp_path, "corrupt", "ok")
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "result.json").write_text('{"test_acc": "n/a"}')
    (job.run_dir / "launcher.json").write_bytes(b"\x00garbage")  # a hint only: ignored when unreadable
    (record,) = LocalLauncher(echo=quiet).run_all([job])
    assert record["status"] == "finished" and record["attempt"] == 1
    assert (job.run_dir / "result.json.corrupt").read_text() == '{"test_acc": "n/a"}'
    assert run_state(job.run_dir) == "finished"


def test_launcher_counts_attempts_of_a_preempted_run(tmp_path: Path) -> None:
    job = fake_job(tmp_path, "p", "preempt")
    LocalLauncher(echo=quiet).run_all([job])
    (record,) = LocalLauncher(echo=quiet).run_all([job])
    assert record["attempt"] == 2 and record["resumed"] is True
    assert (job.run_dir / "run.log").read_text().count("=== attempt") == 2


def test_launcher_runs_one_job_per_gpu_at_once(tmp_path: Path) -> None:
    jobs = [fake_job(tmp_path, "g1", "sleep"), fake_job(tmp_path, "g2", "sleep")]
    records = LocalLauncher(gpus=["3", "5"], echo=quiet).run_all(jobs)
    results = [json.loads((job.run_dir / "result.json").read_text()) for job in jobs]
    assert sorted(r["gpu"] for r in results) == ["3", "5"]
    assert [r["gpu"] for r in results] == [rec["gpu"] for rec in records]
    assert abs(results[0]["start"] - results[1]["start"]) < 0.9  # both started before either ended


def test_launcher_runs_jobs_at_once_each_with_its_share_of_the_cores(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    jobs = [fake_job(tmp_path, "c1", "sleep"), fake_job(tmp_path, "c2", "sleep")]
    LocalLauncher(jobs=2, echo=quiet).run_all(jobs)
    results = [json.loads((job.run_dir / "result.json").read_text()) for job in jobs]
    assert [r["threads"] for r in results] == ["4", "4"] and [r["gpu"] for r in results] == [None, None]
    assert abs(results[0]["start"] - results[1]["start"]) < 0.9  # both started before either ended
    (alone,) = LocalLauncher(echo=quiet).run_all([fake_job(tmp_path, "c3", "ok")])
    assert json.loads((tmp_path / "sweep" / "c3" / "result.json").read_text())["threads"] is None


def test_launcher_reports_a_command_that_cannot_start(tmp_path: Path) -> None:
    job = Job("x", tmp_path / "x", (str(tmp_path / "no-such-python"), "main.py"))
    (record,) = LocalLauncher(echo=quiet).run_all([job])
    assert record["status"] == "failed" and record["exit_code"] == 127
    assert "could not start" in record["log_tail"]


# --------------------------------------------------------------------------- SLURM


def slurm_jobs(tmp_path: Path) -> list[Job]:
    grid = parse_grid(small_grid(), "g", "g.json")
    return build_jobs(grid, expand_runs(grid, None, [1, 2, 3]), tmp_path / "sweep", "python")


def test_slurm_script_has_one_task_per_run(tmp_path: Path) -> None:
    jobs = slurm_jobs(tmp_path)
    files = write_slurm_files(jobs, tmp_path / "sweep", SlurmOptions(partition="gpu", max_parallel=4,
                                                                      extra_options=("--account=abc",)))
    script = files.script.read_text()
    assert len(jobs) == 12
    assert "#SBATCH --array=0-11%4\n" in script
    for directive in ("--requeue", "--signal=USR1@120", "--open-mode=append", "--partition=gpu",
                      "--account=abc", "--gres=gpu:1", f"--output={files.logs}/%A_%a.out"):
        assert f"#SBATCH {directive}\n" in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script and "srun" in script
    lines = files.commands.read_text().splitlines()
    assert [tuple(shlex.split(line)) for line in lines] == [job.command for job in jobs]
    assert files.run_dirs.read_text().splitlines() == [str(job.run_dir) for job in jobs]
    assert files.logs.is_dir()
    subprocess.run(["bash", "-n", str(files.script)], check=True)


def test_slurm_script_without_gres_and_throttle(tmp_path: Path) -> None:
    script = render_slurm_script(slurm_jobs(tmp_path)[:2], slurm_files(tmp_path), SlurmOptions(gres=None))
    assert "#SBATCH --array=0-1\n" in script and "--gres" not in script
    with pytest.raises(UserError, match="no runs"):
        render_slurm_script([], slurm_files(tmp_path), SlurmOptions())


def fake_slurm_bin(tmp_path: Path) -> Path:
    """srun that runs its command (dropping its own options), scontrol that logs its arguments."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (folder / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/scontrol.log\n')
    for tool in ("srun", "scontrol"):
        (folder / tool).chmod(0o755)
    return folder


def run_task(files_script: Path, task: int, bin_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": str(task),
           "SLURM_JOB_ID": "4242", "SLURM_CPUS_PER_TASK": "2"}
    return subprocess.run(["bash", str(files_script)], env=env, capture_output=True, text=True, timeout=60)


def test_slurm_task_requeues_itself_when_preempted(tmp_path: Path) -> None:
    jobs = [fake_job(tmp_path, "a", "ok"), fake_job(tmp_path, "b", "preempt"), fake_job(tmp_path, "c", "nan")]
    files = write_slurm_files(jobs, tmp_path / "sweep", SlurmOptions(), cwd=tmp_path)
    bin_dir = fake_slurm_bin(tmp_path)
    done = run_task(files.script, 0, bin_dir)
    assert done.returncode == 0 and (jobs[0].run_dir / "result.json").is_file()
    again = run_task(files.script, 0, bin_dir)  # finished: the task does nothing
    assert again.returncode == 0 and "nothing to do" in again.stdout
    preempted = run_task(files.script, 1, bin_dir)
    assert preempted.returncode == 75
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    failed = run_task(files.script, 2, bin_dir)
    assert failed.returncode == 3 and "loss is nan" in failed.stderr
    assert (tmp_path / "scontrol.log").read_text().count("requeue") == 1  # failures are not requeued
    assert run_task(files.script, 7, bin_dir).returncode == 2  # no such line


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="sbatch not installed: SLURM script not checked by SLURM")
def test_sbatch_accepts_the_script(tmp_path: Path) -> None:
    from utils.sweeps.launchers import submit_slurm

    files = write_slurm_files(slurm_jobs(tmp_path), tmp_path / "sweep", SlurmOptions(gres=None, time="00:10:00"))
    submit_slurm(files.script, test_only=True)


