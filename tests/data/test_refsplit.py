"""The authors' BiGNAS split, converted once (scripts/bignas_refsplit_convert.py) and read back
with split.kind=given plus click labels (EdgeIndexSplit(label=True), data=bignas-refsplit)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch

from cdrbench.app import load_data
from cdrbench.config import compose
from cdrbench.data.sources.presplit import EdgeIndexSplit
from cdrbench.errors import DataFormatError

REPO = Path(__file__).resolve().parents[2]
FOLDER = "bignas-refsplit-ml100k"


def authors_data_pt(path: Path) -> dict:
    """A tiny data.pt in the authors' layout: 3 users (ids 0-2), items offset by 3."""
    from torch_geometric.data import Data

    source_link = torch.tensor([[0, 0, 1, 2], [3, 4, 3, 5]])
    source_label = torch.tensor([1.0, 0.0, 1.0, 1.0])
    # target rows in time order; per user the last is test, the one before it valid
    target_link = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 2, 2], [3, 3, 4, 5, 4, 3, 4, 5, 5, 6]])
    target_label = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    test = torch.tensor([False, False, False, False, False, False, True, True, False, True])
    valid = torch.tensor([False, False, False, True, True, False, False, False, True, False])
    train = ~(test | valid)
    data = Data(source_link=source_link, source_label=source_label, target_link=target_link,
                target_label=target_label, split_mask={"train": train, "valid": valid, "test": test},
                num_users=3, num_source_items=3, num_target_items=4)
    torch.save([data], path)
    return {"target_label": target_label, "masks": {"train": train, "valid": valid, "test": test},
            "target_link": target_link, "source_label": source_label}


def run_converter(monkeypatch, *args: Path) -> int:
    monkeypatch.setattr(sys, "argv", ["bignas_refsplit_convert.py", *map(str, args)])
    try:
        runpy.run_path(str(REPO / "scripts" / "bignas_refsplit_convert.py"), run_name="__main__")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


def convert(tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    truth = authors_data_pt(tmp_path / "data.pt")
    root = tmp_path / "root"
    assert run_converter(monkeypatch, tmp_path / "data.pt", root / FOLDER) == 0
    return root, truth


def test_converted_split_reads_back_with_its_labels_and_splits(tmp_path, monkeypatch):
    root, truth = convert(tmp_path, monkeypatch)
    cfg = compose(["data=bignas-refsplit", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
                   "data.expected=null"])
    data, _ = load_data(cfg, progress=False)
    assert data.num_users == 3 and data.num_items("source") == 3 and data.num_items("target") == 4
    tokens = {d: data.item_tokens[d] for d in data.domains}
    for split, mask in truth["masks"].items():
        rows = data.rows("target", split)
        got = sorted(zip(data.user_tokens[rows.user.numpy()], tokens["target"][rows.item.numpy()], rows.y.tolist()))
        link, label = truth["target_link"][:, mask], truth["target_label"][mask]
        want = sorted((str(u), str(i), float(y)) for u, i, y in zip(link[0].tolist(), link[1].tolist(), label.tolist()))
        assert got == want, split
    assert sorted(data.train("source").y.tolist()) == sorted(truth["source_label"].tolist())


def test_conversion_is_done_once(tmp_path, monkeypatch, capsys):
    root, _ = convert(tmp_path, monkeypatch)
    with pytest.raises(SystemExit, match="already holds a converted split"):
        monkeypatch.setattr(sys, "argv", ["x", str(tmp_path / "data.pt"), str(root / FOLDER)])
        runpy.run_path(str(REPO / "scripts" / "bignas_refsplit_convert.py"), run_name="__main__")


@pytest.mark.parametrize("line, why", [("0,3,2\n", "label '2' is not 0 or 1"), ("0,3\n", "line 2: has no label")])
def test_label_column_errors_name_file_and_line(tmp_path, line, why):
    folder = tmp_path / FOLDER
    folder.mkdir()
    (folder / "source_train_edge_index.csv").write_text("0,4,1\n" + line)
    reader = EdgeIndexSplit("source", folder=FOLDER, label=True)
    reader.domain = "source"
    with pytest.raises(DataFormatError, match=why):
        reader.read(tmp_path)
