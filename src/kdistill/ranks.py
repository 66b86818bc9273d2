"""Which process of a data-parallel job this is, from the environment a launcher such as torchrun
sets (``RANK``, ``WORLD_SIZE``); framework-free, so ``kdistill.run`` can ask without importing one."""

from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0, or a single process: the one that writes files and the report."""
    return int(os.environ.get("RANK", "0")) == 0
