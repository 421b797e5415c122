"""Flags shared by main.py and Clothing.py that choose faster kernels for the same arithmetic."""
from __future__ import annotations

from typing import Any

from utils.run.config import option
from utils.engine import MEMORY_FORMATS, SGD_KERNELS


def channels_last_option() -> Any:
    return option("auto", "channels-last memory format for images and convolutions: on, off, or auto "
                          "(on on the CPU, where it is faster; off on GPUs and MPS); a bare "
                          "--channels_last means on", choices=MEMORY_FORMATS, nargs="?", const="on")


def sgd_option() -> Any:
    return option("fused", "SGD kernels: fused (one kernel per parameter; ~3x cheaper steps for small "
                           "networks) or plain (torch's default, as the official code); same update, "
                           "last-bit rounding differs", choices=SGD_KERNELS)
