"""The methods main.py runs (--method) and the names results and tables give them."""
from __future__ import annotations

METHODS = ("memomentum", "ce")
METHOD_TITLES = {"memomentum": "Me-Momentum", "ce": "Standard (CE)"}  # the paper's row names
