"""Seeds, devices, progress bars, peak memory and atomic file writes."""

from __future__ import annotations

import os
import random
import resource
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from cdrbench.errors import ConfigError


def needs_deterministic_algorithms(device: Optional[torch.device] = None) -> bool:
    """Whether torch's deterministic mode changes anything for this run.

    On CUDA it does. On CPU it does only with more than one intra-op thread: then the backward
    of advanced indexing (``x[index]``) accumulates in a thread-dependent order, and the mode
    switches it to a sorted, slower path. With one thread every kernel cdrbench runs is already
    deterministic: BPR-MF, LightGCN and BiGNAS give bit-identical parameters with the mode on
    and off (``scripts/check_deterministic.py``), so the mode is not paid for there."""
    if device is not None and device.type == "cuda":
        return True
    return torch.get_num_threads() > 1


def seed_everything(seed: int, deterministic: bool = True, device: Optional[torch.device] = None) -> None:
    """Seed python, numpy and torch; with ``deterministic``, ask torch for deterministic kernels
    (warn-only, so an op without a deterministic implementation warns instead of failing)
    where that changes results (:func:`needs_deterministic_algorithms`)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic and needs_deterministic_algorithms(device):
        torch.use_deterministic_algorithms(True, warn_only=True)
        # cuBLAS needs this for deterministic matmuls on CUDA >= 10.2
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def set_num_threads(num_threads: int) -> int:
    """Set torch's intra-op thread count (``trainer.num_threads``; 0 keeps torch's default) and
    return the count in use."""
    if num_threads < 0:
        raise ConfigError(f"trainer.num_threads must be >= 0 (0 = torch's default), got {num_threads}")
    if num_threads:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()


def global_rng_state() -> dict:
    """Python, numpy and torch RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(value):
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def _to_tuple(value):
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value


def resolve_device(name: str) -> torch.device:
    """``auto`` = the first CUDA device when one is available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"trainer.device={name!r}: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name!r}, but CUDA is not available (use auto or cpu)")
    return device


class Progress:
    """``progress(iterable, total=..., desc=...)``: a tqdm bar when enabled and stderr is a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = bool(enabled) and sys.stderr.isatty()

    def __call__(self, iterable: Iterable, total: Optional[int] = None, desc: str = "", leave: bool = False):
        if not self.enabled:
            return iterable
        return tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True)


def peak_memory_bytes(device: torch.device) -> dict[str, int]:
    """Peak resident memory of this process and, on CUDA, peak allocated device memory."""
    peak = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if device.type == "cuda":
        peak["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return peak


def file_mode(directory: bool = False) -> int:
    """The mode an ordinary new file (``0o666 & ~umask``) or directory (``0o777 & ~umask``) gets;
    ``mkstemp``/``mkdtemp`` alone would leave results, checkpoints and caches private."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same directory + rename."""
    atomic_save(path, lambda tmp: Path(tmp).write_bytes(payload))


def atomic_save(path: Path, save_fn) -> None:
    """Call ``save_fn(tmp_path)`` and rename the result into ``path`` (nothing half-written);
    the file gets the umask's mode, like any file the user creates."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())
        save_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
