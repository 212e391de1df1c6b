"""The command line, run as users run it: a subprocess from an unrelated working directory (or,
where only the message and exit code matter, ``main()`` in process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cdrbench.__main__ import main
from cdrbench.app import build_readers, data_config
from cdrbench.config import compose
from cdrbench.data.prepare import prepare

REPO = Path(__file__).resolve().parents[1]


def run_cli(args, cwd: Path, env_extra=None, timeout=180):
    env = {**os.environ, "CDRBENCH_DATA": str(cwd / "data"), "HYDRA_FULL_ERROR": "0", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "cdrbench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def cli(args, cwd: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    """``python -m cdrbench ARGS`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["cdrbench", *args])
    code = 0
    try:
        main()
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prepare_synthetic_prints_statistics_from_any_directory(tmp_path):
    result = run_cli(["stage=prepare", "data=synthetic", "trainer.progress=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # the tables go to one folder per data set; no timestamped run folder is created
    assert {p.name for p in (tmp_path / "outputs").iterdir()} == {"prepare"}
    written = tmp_path / "outputs" / "prepare" / "synthetic"
    assert {"statistics.csv", "steps.csv", "findings.txt", "data.yaml"} <= {p.name for p in written.iterdir()}
    assert f"written to {written}" in result.stdout
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
    assert result.returncode == 2  # Hydra's own override errors follow the same exit-code rule
    assert result.stderr.startswith("cdrbench: error: Could not override 'data.kcore'")
    assert "Key 'kcore' not in 'DataConfig'" in result.stderr and "Traceback" not in result.stderr
    appended = run_cli(["stage=prepare", "+trainer.patiense=3"], cwd=tmp_path)
    assert appended.returncode == 2
    assert "unknown config key 'trainer.patiense'" in appended.stderr
    wrong_type = run_cli(["stage=prepare", "trainer.patience=many"], cwd=tmp_path)
    assert wrong_type.returncode == 2 and "patience" in wrong_type.stderr
    assert not (tmp_path / "data").exists()  # nothing was prepared
    assert not list((tmp_path / "outputs").rglob("*"))  # and no run folder is left behind


def test_config_error_exits_2_in_one_line_before_torch_is_imported(tmp_path):
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['cdrbench', 'trainer.max_epochs=-1']\n"
        "try:\n    runpy.run_module('cdrbench', run_name='__main__')\n"
        "except SystemExit as done:\n    print(done.code, 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"]  # exit code 2, torch never imported
    assert result.stderr == "cdrbench: error: trainer.max_epochs=-1 must be an integer >= 0\n"


def test_user_errors_are_one_message_with_exit_code_2(tmp_path, monkeypatch, capsys):
    code, _, err = cli(["method=bignas", "method.variant=bogus", "data.root=nowhere"], tmp_path, monkeypatch, capsys)
    assert code == 2
    assert err == ("cdrbench: error: method.variant='bogus' is not one of "
                   "['full', 'manual', 'mix', 'discrete', 'no_source', 'no_impo']\n")
    code, _, err = cli(["data=nosuch"], tmp_path, monkeypatch, capsys)
    assert code == 2 and err.startswith("cdrbench: error: In 'config': Could not find 'data/nosuch'")
    assert "Available options in 'data': amazon-hago," in err
    code, _, err = cli(["data=custom"], tmp_path, monkeypatch, capsys)
    assert code == 2 and "data=custom is a base for your own data" in err
    (tmp_path / "afile").write_text("x")
    code, _, err = cli(["output_root=afile/runs"], tmp_path, monkeypatch, capsys)
    assert code == 2 and err.startswith("cdrbench: error: cannot create the run directory: Not a directory: afile/runs/")
    assert not list((tmp_path / "outputs").rglob("*")) and not (tmp_path / "nowhere").exists()


def test_help_names_stages_groups_and_keys_and_hides_internal_bases(tmp_path, monkeypatch, capsys):
    code, out, _ = cli(["--help"], tmp_path, monkeypatch, capsys)
    assert code == 0
    assert "== Stages (stage=...) ==" in out and "prepare   prepare the data only" in out
    data_line = next(line for line in out.splitlines() if line.startswith("data: "))
    assert "custom" in data_line and "synthetic" in data_line and "_bignas_task" not in out
    method_line = next(line for line in out.splitlines() if line.startswith("method: "))
    assert {"bignas", "bprmf", "hago", "lightgcn", "pcrec", "pop"} <= set(method_line[len("method: "):].split(", "))
    # internal bases and the report's data files are not choices
    assert "_tune_defaults" not in out and "paper_numbers" not in out
    assert next(line for line in out.splitlines() if line.startswith("hparams_search: "))
    assert "+key=value adds a key" in out and "README.md" in out and "powered by Hydra" not in out


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_record_interrupted_and_print_one_line(tmp_path, monkeypatch, capsys, interrupt_training_at,
                                                                 sig, code):
    interrupt_training_at(1, lambda: os.kill(os.getpid(), sig))  # a real signal, delivered to this process
    handler_before = signal.getsignal(signal.SIGTERM)
    sigint_before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own Ctrl-C handling
    args = ["method=bprmf", "data.domains.src.reader.num_users=80", "data.domains.tgt.reader.num_users=80",
            "trainer.max_epochs=5", "trainer.progress=false", f"data.root={tmp_path / 'data'}"]
    try:
        exit_code, _, err = cli(args, tmp_path, monkeypatch, capsys)
    finally:
        signal.signal(signal.SIGINT, sigint_before)
    label = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
    assert exit_code == code
    assert err.strip().splitlines() == [f"cdrbench: interrupted ({label}); an unfinished run continues with trainer.resume=true"]
    status = json.loads(next((tmp_path / "outputs").glob("**/run.json")).read_text())
    assert status["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) == handler_before  # cdrbench's SIGTERM handler is removed again


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
    papers = {f"cdrbench/report/paper_numbers/{p.name}" for p in (REPO / "cdrbench/report/paper_numbers").glob("*.yaml")}
    assert len(papers) >= 3 and papers - names == set()
    assert "cdrbench/conf/__init__.py" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    # only the unpacked wheel provides cdrbench (the repository is not on the path)
    result = run_cli(["stage=prepare", "data=synthetic"], cwd=work, env_extra={"PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"})
    assert result.returncode == 0, result.stderr
    assert "synthetic" in result.stdout and "tgt" in result.stdout
