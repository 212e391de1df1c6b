"""Helpers shared by the benchmark scripts (imported from the scripts' own folder)."""

from __future__ import annotations

import multiprocessing as mp
import resource
import subprocess
import sys
from pathlib import Path


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(target, *args):
    """Run ``target(*args, queue)`` in a fresh spawned process (its own peak RSS) and return what
    it puts on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def sweep(out: Path, name: str, overrides: list[str]) -> None:
    """One Hydra multirun of ``python -m cdrbench`` into ``out/name`` (the experiment scripts' rows)."""
    cmd = [sys.executable, "-m", "cdrbench", "-m", *overrides, f"hydra.sweep.dir={out / name}", "trainer.progress=false"]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
