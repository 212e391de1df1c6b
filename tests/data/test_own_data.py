"""A user's own data: the README's example configs (taken from the README itself) prepare from
files written here; the custom base is neutral; a given split round-trips; the prepare report."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdrbench.app import build_readers, data_config, run_prepare
from cdrbench.config import compose
from cdrbench.data.prepare import prepare
from cdrbench.data.splits import SPLIT_NAMES
from cdrbench.errors import ConfigError, DataFormatError
from cdrbench.eval.evaluator import check_click_labels
from cdrbench.validate import check_config

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_examples() -> dict[str, str]:
    """``name -> YAML`` of every ```yaml block of the README whose first line names
    ``myconf/data/<name>.yaml``."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    out = {}
    for block in blocks:
        match = re.match(r"# myconf/data/([\w-]+)\.yaml", block)
        if match:
            out[match.group(1)] = block
    return out


def write_pair(root: Path, rng: np.random.Generator):
    """Two domains sharing users 0..59; the target's rows repeat some pairs (dedup is off)."""
    rows = {}
    for domain, n_items in (("source", 40), ("target", 30)):
        users = np.repeat(np.arange(60), 10)
        items = np.concatenate([rng.choice(n_items, 10, replace=False) for _ in range(60)])
        ratings = rng.integers(1, 6, users.size)
        ts = 1_600_000_000 + np.arange(users.size)
        frame = pd.DataFrame({"user": [f"u{u}" for u in users], "item": [f"{domain[0]}{i}" for i in items],
                              "rating": ratings, "ts": ts})
        if domain == "target":  # 25 repeated rows
            frame = pd.concat([frame, frame.iloc[::24]], ignore_index=True)
        rows[domain] = frame
    return rows


@pytest.fixture
def own(tmp_path):
    """A config dir holding the README's examples and a data root with their files."""
    examples = readme_examples()
    assert set(examples) == {"my-recbole", "my-tsv", "my-split"}
    conf = tmp_path / "myconf" / "data"
    conf.mkdir(parents=True)
    for name, text in examples.items():
        (conf / f"{name}.yaml").write_text(text)
    root = tmp_path / "mydata"
    rows = write_pair(root, np.random.default_rng(0))
    (root / "my-recbole").mkdir(parents=True)
    for domain, name in (("source", "Books"), ("target", "Movies")):
        with open(root / "my-recbole" / f"{name}.inter", "w") as handle:
            handle.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
            rows[domain].to_csv(handle, sep="\t", header=False, index=False)
    (root / "my-tsv").mkdir()
    for domain, name in (("source", "music"), ("target", "book")):
        rows[domain][["user", "item"]].to_csv(root / "my-tsv" / f"{name}.tsv", sep="\t", header=False, index=False)
    (root / "my-split").mkdir()
    target = rows["target"].drop_duplicates(["user", "item"])
    part = np.random.default_rng(1).choice(["train", "valid", "test"], size=len(target), p=[0.7, 0.15, 0.15])
    for name in ("train", "valid", "test"):
        target[part == name][["user", "item"]].to_csv(root / "my-split" / f"book.{name}.tsv", sep="\t",
                                                       header=False, index=False)
    return tmp_path, rows, dict(zip(zip(target["user"], target["item"]), part))


def prepared(tmp_path, name, *overrides):
    cfg = compose([f"data={name}", f"data.root={tmp_path / 'mydata'}", *overrides], config_dir=str(tmp_path / "myconf"))
    check_config(cfg)
    data_cfg = data_config(cfg)
    return prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)


def raw_rows(data, domain):
    f = data.interactions[domain].to_frame()
    f["u"] = data.user_tokens[f["user"]]
    f["i"] = data.item_tokens[domain][f["item"]]
    return f


def test_recbole_example_labels_and_counts_match_pandas(own):
    tmp_path, rows, _ = own
    data = prepared(tmp_path, "my-recbole")
    target = rows["target"]
    assert data.num_items("movies") == target["item"].nunique()
    assert len(data.interactions["movies"]) == len(target)  # nothing filtered or de-duplicated
    f = raw_rows(data, "movies")
    assert ((f["y"] == 1) == (f["rating"] > 3)).all()  # label_threshold: 3 from the example
    assert data.statistics().loc["all", "overlap_users"] == 60


def test_implicit_tsv_example_has_no_labels_no_dedup_and_splits_pairs(own):
    tmp_path, rows, _ = own
    data = prepared(tmp_path, "my-tsv")
    assert not data.has_labels and data.interactions["book"].y is None
    f = raw_rows(data, "book")
    assert len(f) == len(rows["target"])  # the 25 repeated rows are kept (no dedup unless asked)
    assert f.duplicated(["u", "i"]).sum() == 25
    # ... and split as one unit: no pair in two splits; per user 80/10/10 of its distinct pairs
    assert f.groupby(["u", "i"])["split"].nunique().max() == 1
    per_user = f.drop_duplicates(["u", "i"]).groupby("u")["split"].value_counts().unstack(fill_value=0)
    assert (per_user[0] == 8).all() and (per_user[1] == 1).all() and (per_user[2] == 1).all()
    with pytest.raises(ConfigError, match="implicit data"):
        check_click_labels(data)


def test_given_split_round_trips_for_any_reader(own):
    tmp_path, _, part_of = own
    data = prepared(tmp_path, "my-split")
    f = raw_rows(data, "book")
    assert {(u, i): SPLIT_NAMES[s] for u, i, s in zip(f["u"], f["i"], f["split"])} == part_of
    assert (data.interactions["music"].split == 0).all()


def test_given_split_with_recbole_parts_refuses_a_pair_in_two_splits(own):
    tmp_path, rows, _ = own
    root = tmp_path / "mydata" / "rb-split"
    root.mkdir()
    target = rows["target"]
    header = "user_id:token\titem_id:token\n"
    for name, part in (("train", target.iloc[:500]), ("valid", target.iloc[500:560]), ("test", target.iloc[560:])):
        (root / f"{name}.inter").write_text(header + part[["user", "item"]].to_csv(sep="\t", header=False, index=False))
    (tmp_path / "myconf" / "data" / "rb-split.yaml").write_text(
        "defaults: [custom, _self_]\nname: rb-split\nsplit: {kind: given}\nsource: []\ntarget: t\n"
        "domains:\n  t:\n    reader:\n      _target_: cdrbench.data.sources.given.GivenSplit\n"
        "      train: {_target_: cdrbench.data.sources.recbole.RecBoleAtomic, path: rb-split/train.inter}\n"
        "      valid: rb-split/valid.inter\n      test: rb-split/test.inter\n"
    )
    # the repeated rows of `target` (every 24th row appended at the end) are in test and in train
    with pytest.raises(DataFormatError, match=r"pairs \(\d+ rows\) occur in more than one of train/valid/test"):
        prepared(tmp_path, "rb-split")
    data = prepared(tmp_path, "rb-split", "data.split.unit=row")  # the reference behaviour, on request
    assert int((data.interactions["t"].split == 2).sum()) == len(target) - 560


def test_custom_alone_says_what_to_add():
    with pytest.raises(ConfigError, match=r"data: name, domains, source, target not set.*defaults: \[custom, _self_\]"):
        check_config(compose(["data=custom"]))


def test_prepare_report_shows_steps_findings_and_writes_tables(own, capsys):
    tmp_path, rows, _ = own
    cfg = compose(["data=my-tsv", f"data.root={tmp_path / 'mydata'}", "data.domains.book.kcore=9", "trainer.progress=false"],
                  config_dir=str(tmp_path / "myconf"))
    out_dir = tmp_path / "out"
    data = run_prepare(cfg, out_dir)
    printed = capsys.readouterr().out
    assert "data config (resolved):" in printed and "kcore: 9" in printed
    steps = pd.read_csv(out_dir / "steps.csv")
    kcore = steps.set_index("step").loc["kcore"]
    # an independent count of the 9-core: users and items with >= 9 rows, to a fixed point
    frame = rows["target"]
    while True:
        keep = (frame.groupby("user")["user"].transform("size") >= 9) & (frame.groupby("item")["item"].transform("size") >= 9)
        if keep.all():
            break
        frame = frame[keep]
    assert kcore["book"] == len(frame) and kcore["music"] == len(rows["source"])
    findings = (out_dir / "findings.txt").read_text()
    assert "book: 25 duplicate rows repeat 25 (user, item) pairs" in findings
    assert "book: no click labels" in findings and "have no valid row" in findings
    stats = pd.read_csv(out_dir / "statistics.csv").set_index("domain")
    assert stats.loc["book", "interactions"] == len(data.interactions["book"])
    assert "kcore: 9" in (out_dir / "data.yaml").read_text()
