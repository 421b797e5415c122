"""Sweeps of many runs (reproduce.py): grid.py (grids, run naming, commands), launchers.py (local,
SLURM), outcomes.py (what a run folder says), summary.py (tables), plots.py (figures)."""
