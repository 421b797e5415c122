"""The README and docs/ stay true: every flag they name exists in an entry point's --help, every file
of ours they name exists, and the documented SLURM job script behaves as documented."""
from __future__ import annotations

import importlib
import json
import os
import re
import statistics
import subprocess
from pathlib import Path

import pytest

from utils.clothing_config import ClothingConfig
from utils.run.config import build_parser
from utils.train_config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# flags of other programs the pages show: pip, torchrun, sbatch and srun
OTHER_PROGRAMS = {"--index-url", "--standalone", "--nproc_per_node", "--nnodes", "--rdzv_id", "--rdzv_backend",
                  "--rdzv_endpoint", "--job-name", "--nodes", "--ntasks-per-node", "--gpus-per-node",
                  "--cpus-per-task", "--time", "--requeue", "--signal", "--output", "--gres", "--ntasks",
                  "--array", "--open-mode", "--test-only", "--account", "--partition", "--mem",
                  "--logdir",            # tensorboard
                  "--repeats", "--runs", "--official", "--reuse",  # the benchmarks
                  "--noise_r"}           # shown as an abbreviation that is refused
OUR_PATH = re.compile(r"(?<![\w./-])((?:utils|tests|docs|bench|configs|models|data)/[\w/.-]+\.(?:py|md|json|sh)"
                      r"|(?:main|Clothing|Clothing1m-data|reproduce|plot)\.py|LICENSE|CITATION\.cff)")


def project_flags() -> set[str]:
    parsers = [build_parser(TrainConfig, ""), build_parser(ClothingConfig, ""),
               importlib.import_module("reproduce").build_parser()]
    index_module = importlib.import_module("Clothing1m-data")
    parsers.append(build_parser(index_module.IndexConfig, ""))
    return {flag for parser in parsers for action in parser._actions for flag in action.option_strings}


def test_every_flag_the_pages_name_exists():
    known = project_flags() | OTHER_PROGRAMS
    unknown = sorted({f"{page.name}: {flag}" for page in PAGES
                      for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", page.read_text())
                      if flag not in known and not flag.startswith("--slurm_")})
    assert unknown == []
    assert len(PAGES) >= 12  # README and every page of docs/


def test_every_file_of_ours_the_pages_name_exists():
    missing = sorted({f"{page.name}: {name}" for page in PAGES for name in OUR_PATH.findall(page.read_text())
                      if not (REPO / name).exists()})
    assert missing == []


@pytest.mark.parametrize("status,requeued", [(0, False), (3, False), (75, True)])
def test_the_documented_slurm_script_ends_with_the_runs_status_and_requeues_on_75(tmp_path, status, requeued):
    page = (REPO / "docs" / "cluster.md").read_text()
    script = re.search(r"## One run on SLURM.*?```bash\n(.*?)```", page, re.S).group(1)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/bash\nexit $FAKE_STATUS\n")
    (bin_dir / "scontrol").write_text(f"#!/bin/bash\necho \"$@\" > {tmp_path / 'requeued'}\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_STATUS=str(status), SLURM_JOB_ID="42")
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == status
    assert (tmp_path / "requeued").exists() == requeued
    if requeued:
        assert (tmp_path / "requeued").read_text().split() == ["requeue", "42"]


@pytest.mark.parametrize("status", [0, 2, 3, 75])
def test_the_clothing1m_slurm_script_ends_with_the_runs_status(tmp_path, status):
    page = (REPO / "docs" / "clothing1m.md").read_text()
    script = re.search(r"```bash\n(#!/bin/bash\n#SBATCH.*?)```", page, re.S).group(1)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/bash\nexit $FAKE_STATUS\n")
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho node1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_STATUS=str(status), SLURM_JOB_ID="42",
               SLURM_JOB_NODELIST="node1", SLURM_NNODES="1")
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == status


DIFFERENCE_MARK = re.compile(r"# differs from the official code: (.+)$", re.M)


def test_every_difference_marked_in_the_code_has_its_row_in_the_one_list():
    page = (REPO / "docs" / "method.md").read_text()
    section = page.split("## Where we differ from the official code", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    sources = [path for path in REPO.rglob("*.py")
               if not {".venv", "tests", "runs"} & set(path.relative_to(REPO).parts)]
    marks = [(path.relative_to(REPO), phrase.strip()) for path in sources
             for phrase in DIFFERENCE_MARK.findall(path.read_text())]
    assert len(marks) >= 13  # the marks themselves are kept
    assert [f"{path}: {phrase}" for path, phrase in marks if not any(phrase in row for row in rows)] == []
    # README points to the one list instead of keeping a second one
    assert "where-we-differ-from-the-official-code" in (REPO / "README.md").read_text()


def test_the_pages_link_to_each_other_instead_of_naming_them():
    plain = re.compile(r"(?<!\]\()(?<![\w/\[])`?docs/[A-Za-z_]+\.md")
    unlinked = []
    for page in PAGES:
        fenced = False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            fenced = fenced != line.startswith("```")
            if not fenced and not line.startswith("```") and plain.search(line):
                unlinked.append(f"{page.name}:{number}: {line.strip()}")
    assert unlinked == []


def test_every_figure_of_the_comparisons_with_the_official_code_is_in_results():
    """docs/results.md's tables against the official code: each figure is read again from the files
    under results/ (the official log's printed line, our result.json)."""
    section = (REPO / "docs" / "results.md").read_text().split("## Against the official code on real CIFAR-10", 1)[1]
    checked = 0
    for folder, table in re.findall(r"`(results/[\w.-]+)/`[^|]*?\n\n(\| seed \| official \| ours .*?)\n\n", section, re.S):
        for row in table.splitlines()[2:]:
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            if not cells[0].isdigit():
                continue
            seed = cells[0]
            log = (REPO / folder / f"official-seed{seed}.log").read_text()
            # the authors' final line: Me-Momentum's main.py "Test acc X", PES_cs.py's "Best Test Acc: X"
            printed = re.findall(r"Test acc\s+([0-9.]+)", log) or re.findall(r"Best Test Acc:\s*([0-9.]+)", log)
            result = json.loads((REPO / folder / f"ours-seed{seed}" / "result.json").read_text())
            assert cells[1] == f"{float(printed[-1]):.2f}", (folder, row)
            assert cells[2] == f"{result['test_acc_official']:.2f}", (folder, row)
            assert cells[4] == f"{result['test_acc_last']:.2f}", (folder, row)
            checked += 1
    assert checked >= 8  # CIFAR-10 and MNIST, four seeds each at least


def test_every_figure_of_the_digits_table_is_in_results():
    """docs/results.md's digits table and the README's digits row: each method's mean ± sd and per-seed
    test accuracies are read again from results/digits-instance/."""
    section = (REPO / "docs" / "results.md").read_text().split("## Digits, instance 40 %", 1)[1].split("\n## ", 1)[0]
    titles = {"Me-Momentum": "memomentum", "Standard (CE)": "ce", "Co-teaching": "coteaching", "PES": "pes",
              "PES-semi": "pes_semi"}
    readme = (REPO / "README.md").read_text()
    checked = 0
    for row in re.findall(r"^\| (Me-Momentum|Standard \(CE\)|Co-teaching|PES|PES-semi) \|(.*)$", section, re.M):
        runs = [json.loads((REPO / "results" / "digits-instance" / f"digits-instance-0.4-seed{seed}-{titles[row[0]]}"
                            / "result.json").read_text()) for seed in (1, 2, 3)]
        accuracies = [run["test_acc"] for run in runs]
        reported = (f"{statistics.fmean(accuracies):.2f} ± {statistics.stdev(accuracies):.2f} "
                    f"({', '.join(f'{a:.2f}' for a in accuracies)})")
        assert row[1].split("|")[0].strip() == reported, row
        short = f"{statistics.fmean(accuracies):.1f} ± {statistics.stdev(accuracies):.1f}"
        assert f"{row[0].replace('Standard (CE)', 'CE')} {short}" in readme, (row[0], short)
        checked += 1
    assert checked == len(titles)


MNIST_SETTINGS = {"symmetric 20 %": "symmetric-0.2", "symmetric 40 %": "symmetric-0.4", "pairflip 45 %": "pairflip-0.45",
                  "instance 20 %": "instance-0.2", "instance 40 %": "instance-0.4", "symmetric 50 %": "symmetric-0.5"}


def mnist_result(setting: str, method: str) -> dict:
    folder = REPO / "results" / "mnist-paper" / f"mnist-{MNIST_SETTINGS[setting]}-seed1-{method}"
    return json.loads((folder / "result.json").read_text())


def test_every_figure_of_the_readme_results_is_in_results():
    """The README's Results: the CE and Co-teaching tables and the figures beside the official code are
    read again from results/ (the quoted paper and README figures are the only others)."""
    section = (REPO / "README.md").read_text().split("## Results\n", 1)[1].split("\n## ", 1)[0]
    checked = 0
    for setting, reported, last in re.findall(r"^\| ([a-z]+ \d+ %) \| ([0-9.]+) \| ([0-9.]+) \|$", section, re.M):
        result = mnist_result(setting, "ce")
        assert (reported, last) == (f"{result['test_acc']:.2f}", f"{result['test_acc_last']:.2f}"), setting
        checked += 1
    for setting, first, second in re.findall(r"^\| ([a-z]+ \d+ %) \| ([0-9.]+) \(second network ([0-9.]+)\) \|",
                                              section, re.M):
        last10 = mnist_result(setting, "coteaching")["test_acc_last10"]["exact"]
        assert (first, second) == (f"{last10[0]:.2f}", f"{last10[1]:.2f}"), setting
        checked += 1
    ours = [json.loads((REPO / "results" / "fidelity-mnist" / f"ours-seed{seed}" / "result.json").read_text())
            ["test_acc_official"] for seed in (1, 2, 3, 4)]
    official = [float(re.findall(r"Test acc\s+([0-9.]+)", (REPO / "results" / "fidelity-mnist" /
                                                            f"official-seed{seed}.log").read_text())[-1])
                for seed in (1, 2, 3, 4)]
    for name, values in (("official", official), ("ours", ours)):
        figure = f"{name} {statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"
        assert figure in section.replace("\n", " "), figure
    assert checked >= 6  # five CE settings, Co-teaching at least once


def test_every_figure_of_the_mnist_tables_of_the_results_page_is_in_results():
    page = (REPO / "docs" / "results.md").read_text()
    ce = page.split("## MNIST, the paper's settings, CE", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([a-z]+ \d+ %) \| ([0-9.]+) \| ([0-9.]+) \| (\d+) \|", ce, re.M)
    for setting, reported, last, best_at in rows:
        result = mnist_result(setting, "ce")
        assert (reported, last, int(best_at)) == (f"{result['test_acc']:.2f}", f"{result['test_acc_last']:.2f}",
                                                  result["best_at"]["epoch"]), setting
    coteaching = page.split("## MNIST, Co-teaching", 1)[1].split("\n## ", 1)[0]
    cot_rows = re.findall(r"^\| ([a-z]+ \d+ %) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|", coteaching, re.M)
    for setting, first, second, reported, last in cot_rows:
        result = mnist_result(setting, "coteaching")
        assert (first, second) == tuple(f"{x:.2f}" for x in result["test_acc_last10"]["exact"]), setting
        assert (reported, last) == (f"{result['test_acc']:.2f}", f"{result['test_acc_last']:.2f}"), setting
    assert len(rows) == 5 and len(cot_rows) >= 1


def test_the_quick_start_line_of_the_readme_is_the_committed_run():
    result = json.loads((REPO / "results" / "quickstart" / "result.json").read_text())
    line = (f"best validation accuracy {result['best_val_acc']:.2f}, test accuracy {result['test_acc']:.2f} "
            f"(last epoch {result['test_acc_last']:.2f}; {result['wall_time_s']:.0f}s)")
    assert line in (REPO / "README.md").read_text().replace("\n", " ")
    assert f"gave {result['test_acc']:.2f} (last epoch {result['test_acc_last']:.2f}" in \
        (REPO / "docs" / "results.md").read_text().replace("\n", " ")
