"""Shared fixtures. Real data lives in ../shared/data relative to the repository root; tests that
need it skip (with the reason) where it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# the default of trainer.num_threads: one torch thread (more threads than free cores collapse
# under load; README, "CPU threads"). Tests that build methods directly get the same.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data; skips the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent")
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_path()
