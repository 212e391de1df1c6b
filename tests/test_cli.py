"""The command line, run as users run it: a subprocess from an unrelated working directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cdrbench.app import build_readers, data_config
from cdrbench.config import compose
from cdrbench.data.prepare import prepare

REPO = Path(__file__).resolve().parents[1]


def run_cli(args, cwd: Path, env_extra=None, timeout=180):
    env = {**os.environ, "CDRBENCH_DATA": str(cwd / "data"), "HYDRA_FULL_ERROR": "0", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "cdrbench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_prepare_synthetic_prints_statistics_from_any_directory(tmp_path):
    result = run_cli(["stage=prepare", "data=synthetic", "trainer.progress=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = compose(["data=synthetic", f"data.root={tmp_path / 'data'}"])
    data_cfg = data_config(cfg)
    data = prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)
    stats = data.statistics()
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    # columns: role users items interactions ... for the domain rows
    assert lines["tgt"][1:5] == ["target", str(stats.loc["tgt", "users"]), str(stats.loc["tgt", "items"]),
                                 str(stats.loc["tgt", "interactions"])]
    assert lines["all"][1] == str(data.num_users)
    assert "train" in result.stdout and "overlap_users" in result.stdout


def test_unknown_config_key_fails_before_any_work(tmp_path):
    result = run_cli(["stage=prepare", "data.kcore=5"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Key 'kcore' not in 'DataConfig'" in result.stderr
    appended = run_cli(["stage=prepare", "+trainer.patiense=3"], cwd=tmp_path)
    assert appended.returncode == 2
    assert "unknown config key 'trainer.patiense'" in appended.stderr
    wrong_type = run_cli(["stage=prepare", "trainer.patience=many"], cwd=tmp_path)
    assert wrong_type.returncode != 0 and "patience" in wrong_type.stderr
    assert not (tmp_path / "data").exists()  # nothing was prepared


def test_missing_file_with_download_off_names_file_url_and_fix(tmp_path):
    result = run_cli(["stage=prepare", "data=bo-mo", "data.download=false"], cwd=tmp_path)
    assert result.returncode == 2
    message = result.stderr
    assert str(tmp_path / "data" / "amazon2014" / "reviews_Books_5.json.gz") in message
    assert "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_Books_5.json.gz" in message
    assert "data.download" in message
    assert "Traceback" not in message
    assert "does not exist" in message and not (tmp_path / "data").exists()  # the root is not created


@pytest.mark.slow
def test_installed_wheel_finds_its_config_from_any_directory(tmp_path):
    """A normal (non-editable) install ships conf/ inside the package as cdrbench.conf."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {build.stderr[-500:]}")
    wheel = next((tmp_path / "dist").glob("cdrbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    # everything that ships is derived from the tree (setup.py): every YAML under conf/ at any
    # depth and every module of the package, so a new config group or subpackage cannot be lost
    shipped_yaml = {f"cdrbench/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    shipped_py = {p.relative_to(REPO).as_posix() for p in (REPO / "cdrbench").rglob("*.py")}
    assert len(shipped_yaml) > 20 and "cdrbench/conf/trainer/default.yaml" in shipped_yaml
    assert shipped_yaml - names == set()
    assert shipped_py - names == set()
    assert "cdrbench/conf/__init__.py" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    # only the unpacked wheel provides cdrbench (the repository is not on the path)
    result = run_cli(["stage=prepare", "data=synthetic"], cwd=work, env_extra={"PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"})
    assert result.returncode == 0, result.stderr
    assert "synthetic" in result.stdout and "tgt" in result.stdout
