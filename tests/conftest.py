"""Shared fixtures. Real data lives in ../shared/data relative to the repository root; tests that
need it skip (with the reason) where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# the default of trainer.num_threads: one torch thread (more threads than free cores collapse
# under load; README, "CPU threads"). Tests that build methods directly get the same.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


#: the synthetic two-domain data at a few dozen users and items, for tests that train a method
TINY_SYNTHETIC = [
    "data=synthetic",
    "data.domains.src.reader.num_users=60",
    "data.domains.tgt.reader.num_users=60",
    "data.domains.src.reader.num_items=40",
    "data.domains.tgt.reader.num_items=30",
    "data.domains.src.reader.interactions_per_user=8",
    "data.domains.tgt.reader.interactions_per_user=8",
]


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data; skips the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent")
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_path()


@pytest.fixture(autouse=True, scope="session")
def _session_user_cache(tmp_path_factory):
    """The user cache (prepared data, artifacts: ``$XDG_CACHE_HOME/cdrbench``) of this test
    session is a temporary folder, never the developer's ``~/.cache``; subprocesses inherit it."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture
def interrupt_training_at(monkeypatch):
    """``interrupt_training_at(epoch, action)``: the collaborative-filtering baselines run
    ``action()`` (default: raise KeyboardInterrupt, a crash) when they reach ``epoch``."""
    from cdrbench.methods.baselines import CollaborativeFiltering

    original = CollaborativeFiltering.train_epoch

    def patch(epoch: int, action=None):
        def train_epoch(self, phase, at, progress):
            if at == epoch:
                if action is None:
                    raise KeyboardInterrupt("simulated crash")
                action()
            return original(self, phase, at, progress)

        monkeypatch.setattr(CollaborativeFiltering, "train_epoch", train_epoch)
        return lambda: monkeypatch.setattr(CollaborativeFiltering, "train_epoch", original)

    return patch
