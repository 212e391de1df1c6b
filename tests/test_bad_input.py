"""The bad-input findings of the new-user trial (issue 10), each with the message it must give.

In process and on tiny data; the CLI's exit codes and stderr are in tests/test_cli.py."""

from __future__ import annotations

import errno
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cdrbench.app import build_readers, data_config, run, run_training
from cdrbench.config import DataConfig, DomainConfig, SplitConfig, compose
from cdrbench.data import prepare as prep
from cdrbench.data.sources.base import RawFile, tidy_frame
from cdrbench.data.sources.csv import DelimitedFile
from cdrbench.data.sources.recbole import RecBoleAtomic
from cdrbench.errors import ConfigError, DataFileError, DataFormatError, OutputError
from cdrbench.eval.evaluator import check_click_labels, monitor_value
from cdrbench.train import record
from cdrbench.validate import check_config

SMALL = [
    "data=synthetic", "data.domains.src.reader.num_users=80", "data.domains.tgt.reader.num_users=80",
    "data.domains.src.reader.num_items=50", "data.domains.tgt.reader.num_items=40", "trainer.progress=false",
    "trainer.max_epochs=3", "optimizer.lr=0.01", "method=bprmf", "method.batch_size=256",
]


def small(tmp_path, *overrides):
    return compose([*SMALL, f"data.root={tmp_path / 'data'}", f"output_root={tmp_path}", *overrides])


# ---------------------------------------------------------------------------- config values
@pytest.mark.parametrize("overrides, message", [
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1 must be an integer >= 0"),
    (["trainer.patience=0"], "trainer.patience=0 must be an integer >= 1"),
    (["optimizer.lr=-1"], "optimizer.lr=-1 must be a number > 0"),
    (["eval.ks=[0]"], r"eval.ks=\[0\] must be a non-empty list of integers >= 1"),
    (["eval.ks=[]"], r"eval.ks=\[\] must be a non-empty list"),
    (["data.split.ratios=[0.8,0.3,0.1]"], r"data.split.ratios=\[0.8, 0.3, 0.1\] sums to 1.2"),
    (["eval.tasks=[ctr]", "eval.baseline_run=/nonexistent"], "eval.baseline_run=/nonexistent: no results.json"),
    (["eval.baseline_run=/nonexistent"], "eval.baseline_run reports RelaImpr .* eval.tasks must include ctr"),
    (["trainer.monitor=ndcg@30"], r"trainer.monitor='ndcg@30' is not evaluated .* choose one of \['recall@10'"),
    (["eval.tasks=[ctr]", "trainer.monitor=ndcg@10"], "trainer.monitor='ndcg@10' is not evaluated"),
    (["eval.negatives=-1"], "eval.negatives=-1 must be an integer >= 0"),
    (["data.split.unit=rows"], "data.split.unit='rows' is not one of"),
])
def test_config_values_are_rejected_before_any_work_naming_the_key(tmp_path, overrides, message):
    cfg = small(tmp_path, *overrides)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)
    with pytest.raises(ConfigError, match=message):  # the API entry checks the same
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_data_root_that_is_a_file_or_missing_is_named_and_nothing_is_created(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=f"data.root='{a_file}' is a file"):
        check_config(compose(["data=ml100k", f"data.root={a_file}"]))
    missing = tmp_path / "nowhere"
    cfg = compose(["data=douban-book", f"data.root={missing}"])  # no URL: cannot be downloaded
    data_cfg = data_config(cfg)
    with pytest.raises(DataFileError, match=f"data.root={missing} does not exist .* nothing was created"):
        prep.prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)
    assert not missing.exists()

    class Downloadable(RecBoleAtomic):  # a file with a URL: the download would create the root
        def raw_files(self, root):
            return [RawFile("x/f.inter", url=(tmp_path / "gone.inter").as_uri())]

    data_cfg.download = True
    readers = {"book": Downloadable("x/f.inter")}
    with pytest.raises(DataFileError, match="Could not download data file"):
        prep.prepare(data_cfg, readers, progress=False, log=lambda _: None)
    assert not missing.exists()  # the failed download left no empty folders


def test_method_and_optimizer_options_are_checked_before_data_preparation(tmp_path):
    # bo-mo's files are absent: a preparation would fail on them, so these errors come first
    base = ["data=bo-mo", f"data.root={tmp_path / 'nodata'}", "data.download=false", f"output_root={tmp_path}"]
    with pytest.raises(ConfigError) as error:
        run(compose([*base, "method=bignas", "method.variant=bogus"]), tmp_path / "run")
    assert str(error.value).startswith("method.variant='bogus' is not one of ['full', 'manual'")
    assert "Error in call to target" not in str(error.value)  # the ConfigError alone
    with pytest.raises(ConfigError, match=r"optimizer \(torch.optim.Adam\): Invalid beta parameter at index 0: 1.5"):
        run(compose([*base, "+optimizer.betas=[1.5,0.9]"]), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"backbone \(cdrbench.models.lightgcn.LightGCNEncoder\): .*negative dimension"):
        run(compose([*base, "method=lightgcn", "backbone.embedding_dim=-4"]), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"data.domains.tgt.reader \(.*SyntheticDomain\): .*unexpected keyword argument 'bogus'"):
        data_cfg = data_config(compose(["+data.domains.tgt.reader.bogus=1"]))
        build_readers(data_cfg)
    assert not (tmp_path / "run").exists() and not (tmp_path / "nodata").exists()


# ---------------------------------------------------------------------------- data files
def cfg_for(**overrides) -> DataConfig:
    cfg = DataConfig(name="t", domains={"s": DomainConfig(reader=None), "t": DomainConfig(reader=None)},
                     source=["s"], target="t", split=SplitConfig(kind="ratio"))
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def source_frame(users=range(20)):
    users = [f"u{u}" for u in users for _ in range(3)]
    return tidy_frame(users, [f"s{i % 7}" for i in range(len(users))], np.full(len(users), 4.0), np.zeros(len(users)), "s")


def read(reader, root, domain="t"):
    reader.domain = domain
    return reader.read(root)


def write_tsv(path: Path, rows) -> Path:
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


def target_rows(n_users=20, n_items=15, rating=lambda u, i: 1 + (u + i) % 5):
    """Five items per user out of ``n_items`` (a third of all pairs)."""
    return [(f"u{u}", f"t{i}", rating(u, i)) for u in range(n_users) for i in range(n_items) if (u + i) % 3 == 0]


def test_every_row_duplicated_never_puts_a_pair_in_two_splits():
    rows = target_rows()
    frame = tidy_frame(*zip(*[(u, i, r, 0.0) for u, i, r in rows + rows]), "t")
    data, report = prep.preprocess({"s": source_frame(), "t": frame}, cfg_for(), log=lambda _: None)
    t = data.interactions["t"].to_frame()
    assert t.groupby(["user", "item"])["split"].nunique().max() == 1
    assert f"t: {len(rows)} duplicate rows repeat {len(rows)} (user, item) pairs" in "\n".join(report["findings"])


def test_out_of_range_ratings_are_reported_with_count_example_and_line_and_extra_fields_warn(tmp_path):
    rows = target_rows()
    rows[6] = ("u1", "t5", -3)
    rows[9] = ("u1", "t14", 1000)
    path = write_tsv(tmp_path / "t.tsv", rows)
    with open(path, "a") as handle:
        handle.write("u3\tt9\t4\textra\tfields\n")
    reader = DelimitedFile("t.tsv", sep="\t", columns={"user": 0, "item": 1, "rating": 2})
    frame = read(reader, tmp_path)
    notes = reader.take_notes()
    assert notes == [f"{path}: 1 lines have more than the 3 fields of the first line (e.g. line {len(rows) + 1}); "
                     "the extra fields are ignored"]
    with pytest.raises(DataFormatError, match=rf"domain 't': 2 rows have a rating outside data.rating_range=\[1, 5\], "
                                              rf"e.g. -3 at {path} line 7"):
        prep.preprocess({"s": source_frame(), "t": frame}, cfg_for(rating_range=[1, 5]), log=lambda _: None)
    _, report = prep.preprocess({"s": source_frame(), "t": frame}, cfg_for(), log=lambda _: None)
    assert "t: ratings -3..1000" in "\n".join(report["findings"])  # without a range: shown, not hidden


def test_empty_file_empty_rating_no_common_users_and_corrupt_gzip_in_the_users_terms(tmp_path):
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(DataFormatError, match="empty.tsv: the file is empty"):
        read(DelimitedFile("empty.tsv", sep="\t"), tmp_path)
    rows = target_rows()
    rows[3] = ("u0", "t6", "")
    write_tsv(tmp_path / "t.tsv", rows)
    reader = DelimitedFile("t.tsv", sep="\t", columns={"user": 0, "item": 1, "rating": 2})
    frame = read(reader, tmp_path)
    assert "1 rows have an empty rating field (e.g. line 4)" in reader.take_notes()[0]
    with pytest.raises(ConfigError, match=rf"data.label_threshold=3 needs a rating on every row, but domain 't' has 1 of "
                                          rf"{len(rows)} rows without one \(e.g. .*t.tsv line 4\)"):
        prep.preprocess({"s": source_frame(), "t": frame}, cfg_for(label_threshold=3), log=lambda _: None)
    with pytest.raises(DataFormatError, match="data.users=common: no user appears in every domain"):
        prep.preprocess({"s": source_frame(range(100, 120)), "t": frame}, cfg_for(users="common"), log=lambda _: None)
    good = gzip.compress(("\n".join("\t".join(map(str, r)) for r in target_rows(200)) + "\n").encode())
    (tmp_path / "broken.tsv.gz").write_bytes(good[: len(good) // 2] + bytes(64))
    with pytest.raises(DataFileError, match="broken.tsv.gz is not a valid gzip file"):
        read(DelimitedFile("broken.tsv.gz", sep="\t"), tmp_path)
    (tmp_path / "Broken.inter").write_bytes(gzip.compress(b"user_id:token\titem_id:token\nu1\ti1\n" * 50)[:40])
    with pytest.raises(DataFileError, match="Broken.inter is not a valid gzip file"):
        read(RecBoleAtomic("Broken.inter"), tmp_path)


def test_delimited_integer_columns_are_positions_and_a_header_that_looks_like_data_is_reported(tmp_path):
    write_tsv(tmp_path / "h.tsv", [("who", "what", "stars"), ("u1", "i1", 5), ("u2", "i2", 3)])
    frame = read(DelimitedFile("h.tsv", sep="\t", header=True, columns={"user": 0, "item": 1, "rating": 2}), tmp_path)
    assert frame["item"].tolist() == ["i1", "i2"] and frame["line"].tolist() == [2, 3]
    write_tsv(tmp_path / "n.tsv", [("u1", "i1", 5), ("u2", "i2", 3), ("u1", "i2", 4)])
    reader = DelimitedFile("n.tsv", sep="\t", header=True, columns={"user": 0, "item": 1, "rating": 2})
    assert read(reader, tmp_path)["user"].tolist() == ["u2", "u1"]
    assert "header=true, but the first line 'u1\\ti1\\t5' looks like data" in reader.take_notes()[0]
    with pytest.raises(DataFormatError, match=r"line 1: rating 'stars' is not a number; the line looks like a header"):
        read(DelimitedFile("h.tsv", sep="\t", columns={"user": 0, "item": 1, "rating": 2}), tmp_path)
    with pytest.raises(ConfigError, match="columns.user='who' is a column name, but header=false"):
        DelimitedFile("h.tsv", sep="\t", columns={"user": "who", "item": "what"})


def test_a_domain_with_one_item_or_over_full_density_is_an_error():
    users = [f"u{u}" for u in range(30)]
    constant = tidy_frame(users, ["same"] * 30, np.full(30, 4.0), np.zeros(30), "t")
    with pytest.raises(DataFormatError, match=r"domain 't' has 1 item \('same'\) in 30 rows .* columns.item"):
        prep.preprocess({"s": source_frame(), "t": constant}, cfg_for(), log=lambda _: None)
    repeated = tidy_frame(["u0", "u1"] * 20, ["a", "b"] * 20, np.full(40, 4.0), np.zeros(40), "t")
    with pytest.raises(DataFormatError, match=r"domain 't': 40 rows for 2 users x 2 items \(1000% density\)"):
        prep.preprocess({"s": source_frame(), "t": repeated}, cfg_for(), log=lambda _: None)


def test_prepared_cache_with_a_file_missing_is_rebuilt(tmp_path):
    cfg = data_config(small(tmp_path, f"data.cache_dir={tmp_path / 'cache'}"))
    first = prep.prepare(cfg, build_readers(cfg), progress=False, log=lambda _: None)
    (first.path / "items_tgt.tsv").unlink()
    messages = []
    again = prep.prepare(cfg, build_readers(cfg), progress=False, log=messages.append)
    assert any("is incomplete or unreadable" in m and "rebuilding" in m for m in messages)
    assert again.path == first.path and (again.path / "items_tgt.tsv").is_file()
    assert again.num_items("tgt") == first.num_items("tgt")


# ---------------------------------------------------------------------------- labels
def labelled(ratings) -> "prep.CrossDomainData":
    rows = target_rows(rating=lambda u, i: ratings[(u + 2 * i) % len(ratings)])
    frame = tidy_frame(*zip(*[(u, i, r, 0.0) for u, i, r in rows]), "t")
    data, _ = prep.preprocess({"s": source_frame(), "t": frame}, cfg_for(label_threshold=3), log=lambda _: None)
    return data


def test_one_label_class_stops_before_training_with_counts_and_the_key():
    with pytest.raises(ConfigError, match=r"every one of the 60 train rows of 't' is a click \(y = 1\); its ratings span "
                                          r"4..5: change data.label_threshold"):
        check_click_labels(labelled([4, 5]))
    check_click_labels(labelled([2, 4, 5]))  # both classes everywhere: fine
    with pytest.raises(ConfigError, match=r"undefined on the validation split \(only one class\).*all clicks or no clicks"):
        monitor_value({"auc": None}, "auc", {"auc_undefined_reason": "only one class"})


# ---------------------------------------------------------------------------- the run record
def test_output_dir_under_a_file_read_only_or_full_is_named_and_recorded(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=f"cannot create the run directory {tmp_path / 'file' / 'run'}: Not a directory"):
        run_training(small(tmp_path), tmp_path / "file" / "run")

    def read_only(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    with monkeypatch.context() as patch:
        patch.setattr(Path, "mkdir", read_only)
        with pytest.raises(OutputError, match="cannot create the run directory .*ro: Permission denied"):
            run_training(small(tmp_path), tmp_path / "ro")

    def disk_full(path, payload):
        if Path(path).name == "results.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, payload)

    original = record.write_json
    monkeypatch.setattr("cdrbench.app.write_json", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        run_training(small(tmp_path), tmp_path / "full")
    status = json.loads((tmp_path / "full" / "run.json").read_text())
    assert status["status"] == "failed" and "No space left on device" in status["error"]
    assert not (tmp_path / "full" / "results.json").exists()


def test_failure_status_is_written_even_when_the_atomic_write_cannot_be(tmp_path, monkeypatch):
    record.write_status(tmp_path, status="running", seed=0)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record, "atomic_write_bytes", no_space)
    record.record_failure(tmp_path, status="failed", error="OSError: disk full")
    assert json.loads((tmp_path / "run.json").read_text()) == {"status": "failed", "seed": 0, "error": "OSError: disk full"}


def test_corrupt_checkpoint_is_named(tmp_path):
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / "last.pt").write_bytes(os.urandom(2000))
    with pytest.raises(OutputError, match=f"checkpoint {crashed / 'last.pt'} is corrupt or not a cdrbench checkpoint"):
        run_training(small(tmp_path, f"trainer.resume_from={crashed}"), tmp_path / "run")
    torch.save({"weights": torch.zeros(2)}, crashed / "last.pt")  # readable, but not a resume checkpoint
    with pytest.raises(OutputError, match=r"not a cdrbench resume checkpoint \(it lacks \['method'"):
        run_training(small(tmp_path, f"trainer.resume_from={crashed}"), tmp_path / "run")


def test_history_every_epoch_finished_resumption_umask_and_metrics_csv(tmp_path, interrupt_training_at):
    restore = interrupt_training_at(2)
    with pytest.raises(KeyboardInterrupt):
        run_training(small(tmp_path), tmp_path / "crashed")
    assert pd.read_csv(tmp_path / "crashed" / "history.csv")["epoch"].tolist() == [0, 1]  # written every epoch
    restore()
    old_mask = os.umask(0o022)
    try:
        results = run_training(small(tmp_path, "trainer.resume=true"), tmp_path / "resumed")
    finally:
        os.umask(old_mask)
    assert results["resumed_from"] == str(tmp_path / "crashed")
    assert json.loads((tmp_path / "crashed" / "run.json").read_text())["resumed_by"] == str(tmp_path / "resumed")
    with pytest.raises(ConfigError, match=f"nothing left to resume .* {tmp_path / 'crashed'} was resumed to completion by "
                                          f"{tmp_path / 'resumed'}"):
        run_training(small(tmp_path, "trainer.resume=true"), tmp_path / "again")
    for name in ("results.json", "last.pt", "best.pt", "history.csv", "metrics.csv", "run.json"):
        assert (tmp_path / "resumed" / name).stat().st_mode & 0o777 == 0o644, name  # the umask's mode, not 0600
    metrics = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    assert list(metrics.columns) == ["split", "metric", "value"]
    by_key = metrics.set_index(["split", "metric"])["value"]
    assert by_key[("test", "ndcg@20")] == pytest.approx(results["test"]["ndcg@20"])
    assert len(metrics) == len(results["valid"]) + len(results["test"])


def test_prepared_cache_defaults_to_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cfg = data_config(small(tmp_path))
    assert prep.resolve_cache_dir(cfg) == tmp_path / "xdg" / "cdrbench" / "prepared"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert prep.resolve_cache_dir(cfg) == Path("~/.cache/cdrbench/prepared").expanduser().resolve()
    cfg.cache_dir = str(tmp_path / "mine")
    assert prep.resolve_cache_dir(cfg) == tmp_path / "mine"
