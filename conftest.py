"""Puts the repository root on sys.path so tests import `data`, `models` and `utils` as the entry points do."""
