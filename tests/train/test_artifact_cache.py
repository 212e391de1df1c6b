"""The shared pre-training cache: misses on any changed part, hits otherwise, never half-written."""

from __future__ import annotations

import json

import pytest
import torch

from cdrbench.train.artifact_cache import META, STATE, ArtifactCache, artifact_key

PARTS = {"data": "abc123", "method": "hago", "pretrain": {"epochs": 30, "lr": 0.005, "method": "grace"}, "seed": 0}


def test_key_is_order_independent_and_changes_with_every_part():
    reordered = {"seed": 0, "pretrain": {"method": "grace", "lr": 0.005, "epochs": 30}, "method": "hago", "data": "abc123"}
    assert artifact_key(PARTS) == artifact_key(reordered)
    variants = [
        {**PARTS, "data": "abc124"},
        {**PARTS, "seed": 1},
        {**PARTS, "pretrain": {**PARTS["pretrain"], "epochs": 31}},
        {**PARTS, "pretrain": {**PARTS["pretrain"], "lr": 0.0050001}},
        {**PARTS, "pretrain": {**PARTS["pretrain"], "extra": None}},
    ]
    keys = {artifact_key(v) for v in variants}
    assert len(keys) == len(variants) and artifact_key(PARTS) not in keys


def test_key_refuses_values_without_a_canonical_form():
    with pytest.raises(TypeError, match="canonical"):
        artifact_key({"x": object()})


def test_hit_after_save_and_miss_on_other_options(tmp_path):
    cache = ArtifactCache(tmp_path, log=lambda _: None)
    assert cache.load("hago", PARTS) is None
    state = {"emb": torch.arange(6.0).reshape(2, 3), "step": 7}
    cache.save("hago", PARTS, state)
    loaded = cache.load("hago", PARTS)
    assert torch.equal(loaded["emb"], state["emb"]) and loaded["step"] == 7
    assert cache.load("hago", {**PARTS, "seed": 1}) is None
    assert cache.load("pcrec", PARTS) is None  # namespaces are separate


def test_incomplete_or_torn_entry_is_a_miss_and_gets_replaced(tmp_path):
    cache = ArtifactCache(tmp_path, log=lambda _: None)
    entry = cache.entry("hago", artifact_key(PARTS))
    entry.mkdir(parents=True)
    torch.save({"emb": torch.zeros(1)}, entry / STATE)  # a crash before meta.json
    assert cache.load("hago", PARTS) is None
    (entry / META).write_text(json.dumps({"parts": json.loads(json.dumps(PARTS))}))
    (entry / STATE).write_bytes(b"not a checkpoint")  # torn state file
    assert cache.load("hago", PARTS) is None
    cache.save("hago", PARTS, {"emb": torch.ones(2)})
    assert torch.equal(cache.load("hago", PARTS)["emb"], torch.ones(2))
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no temporary directory left


def test_crash_during_save_leaves_no_entry(tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path, log=lambda _: None)

    def broken_save(obj, path):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cache.save("hago", PARTS, {"emb": torch.ones(2)})
    monkeypatch.undo()
    assert cache.load("hago", PARTS) is None
    assert list((tmp_path / "hago").iterdir()) == []


def test_loading_refuses_pickled_objects(tmp_path):
    """weights_only=True: an entry holding arbitrary objects does not load (it is a miss)."""
    cache = ArtifactCache(tmp_path, log=lambda _: None)
    entry = cache.entry("hago", artifact_key(PARTS))
    entry.mkdir(parents=True)
    torch.save({"obj": _Pickled()}, entry / STATE)
    (entry / META).write_text(json.dumps({"parts": json.loads(json.dumps(PARTS))}))
    assert cache.load("hago", PARTS) is None


class _Pickled:
    pass


def test_weights_of_a_diverged_run_are_never_stored(tmp_path):
    lines = []
    cache = ArtifactCache(tmp_path, log=lines.append)
    parts = {"data": "d", "lr": 0.1}
    state = {"encoder": {"weight": torch.tensor([1.0, float("nan")]), "steps": torch.tensor(3)}}
    assert cache.save("m", parts, state) is None
    assert cache.load("m", parts) is None and not any(tmp_path.rglob(STATE))
    assert "non-finite values in encoder.weight" in lines[-1]
    state["encoder"]["weight"] = torch.tensor([1.0, 2.0])
    assert cache.save("m", parts, state) is not None and cache.load("m", parts) is not None
