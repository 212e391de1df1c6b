"""Sweeps as users run them: failed jobs in a multirun, idempotent reruns, joblib and Ray
launchers, the Optuna search and its resume after a kill. Tiny synthetic data; the command line
runs in this process (``cdrbench.__main__.main``), except the Optuna run that is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdrbench.app import run_training
from cdrbench.config import compose

TINY = [
    "data.domains.src.reader.num_users=40", "data.domains.tgt.reader.num_users=40",
    "data.domains.src.reader.num_items=30", "data.domains.tgt.reader.num_items=20",
    "data.domains.src.reader.interactions_per_user=8", "data.domains.tgt.reader.interactions_per_user=8",
    "trainer.progress=false",
]


def cli(monkeypatch, tmp_path, *args) -> int:
    """``cdrbench <args>`` in this process (as the console script runs it); returns the exit code.
    In-process keeps these tests cheap: no fresh interpreter importing torch per sweep."""
    from cdrbench.__main__ import main

    monkeypatch.setattr(sys, "argv", ["cdrbench", *args, *TINY, f"data.root={tmp_path / 'data'}"])
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def job_status(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/run.json"))}


def test_multirun_whose_first_job_fails_runs_every_job_and_exits_nonzero(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    code = cli(monkeypatch, tmp_path, "-m", "method=pop", "method.smoothing=-1,1", "seed=0", f"hydra.sweep.dir={sweep}")
    err = capsys.readouterr().err
    assert code == 1, err[-2000:]
    status = job_status(sweep)
    assert status["0_synthetic_pop_s0"]["status"] == "failed"
    assert "method.smoothing must be >= 0" in status["0_synthetic_pop_s0"]["error"]
    assert status["1_synthetic_pop_s0"]["status"] == "finished"  # the later job still ran
    assert (sweep / "1_synthetic_pop_s0" / "results.json").is_file()
    assert "1 job(s) of the multirun did not finish" in err
    assert "0_synthetic_pop_s0 [failed] method=pop method.smoothing=-1" in err
    assert "Traceback" not in err  # a user error: one line, no traceback
    assert (sweep / "report" / "table.md").is_file()  # the report of the jobs that finished


def test_finished_config_and_seed_is_skipped_with_a_line(tmp_path, capsys):
    overrides = ["method=pop", "data=synthetic", *TINY, f"data.root={tmp_path / 'data'}", f"output_root={tmp_path}"]
    first = run_training(compose([*overrides, "trainer.skip_finished=true"]), tmp_path / "first")
    capsys.readouterr()
    again = run_training(compose([*overrides, "trainer.skip_finished=true"]), tmp_path / "again")
    line = capsys.readouterr().out
    assert f"skipping: {tmp_path / 'first'} already has results.json for config {first['config_hash']} and seed 0" in line
    assert again == first
    assert not (tmp_path / "again" / "results.json").exists()
    assert json.loads((tmp_path / "again" / "run.json").read_text())["status"] == "skipped"
    other_seed = run_training(compose([*overrides, "trainer.skip_finished=true", "seed=1"]), tmp_path / "seed1")
    assert other_seed["seed"] == 1 and (tmp_path / "seed1" / "results.json").is_file()
    # outside a multirun the default (null) runs again
    assert run_training(compose(overrides), tmp_path / "plain")["run_dir"] == str(tmp_path / "plain")


def _two_job_sweep(tmp_path, monkeypatch, *launcher_args):
    sweep = tmp_path / "sweep"
    code = cli(monkeypatch, tmp_path, "-m", "method=pop", "seed=0,1", f"hydra.sweep.dir={sweep}",
               "report.after_multirun=false", *launcher_args)
    assert code == 0
    status = job_status(sweep)
    assert [s["status"] for s in status.values()] == ["finished", "finished"]
    pids = {s["pid"] for s in status.values()}
    assert os.getpid() not in pids  # the jobs ran in worker processes, not in the launching one
    results = [json.loads((sweep / name / "results.json").read_text()) for name in status]
    assert sorted(r["seed"] for r in results) == [0, 1]
    return pids


def test_joblib_launcher_runs_two_jobs_in_two_workers(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    pids = _two_job_sweep(tmp_path, monkeypatch, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert len(pids) == 2


def test_ray_launcher_runs_two_jobs_locally(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    _two_job_sweep(tmp_path, monkeypatch, "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                   "+hydra.launcher.ray.init.include_dashboard=false")


# ---------------------------------------------------------------------------- Optuna
def _study(path: Path):
    import optuna

    return optuna.load_study(study_name="bprmf_synthetic", storage=f"sqlite:///{path / 'study.db'}")


def test_optuna_study_of_three_trials_resumes_after_a_kill_to_five(tmp_path):
    optuna = pytest.importorskip("optuna")
    from optuna.trial import TrialState

    from cdrbench.sweeps.tune import tune

    study_dir = tmp_path / "study"
    common = ["hparams_search=bprmf", "data=synthetic", *TINY, f"data.root={tmp_path / 'data'}",
              f"hparams_search.dir={study_dir}", "hparams_search.n_startup_trials=2",
              "hparams_search.heartbeat_interval_s=1", "hparams_search.heartbeat_grace_s=2"]
    summary = tune([*common, "hparams_search.n_trials=3", "trainer.max_epochs=2"], log=lambda _: None)
    study = _study(study_dir)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3 and summary["completed_trials"] == 3
    for trial in complete:  # the objective is the validation value of the selection metric
        results = json.loads((Path(trial.user_attrs["run_dir"]) / "results.json").read_text())
        assert results["monitor"] == "ndcg@20" and trial.value == results["valid"]["ndcg@20"]

    # a second invocation aiming at 5 trials, killed while its first new trial runs
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cdrbench", "tune", *common, "hparams_search.n_trials=5",
                             "trainer.max_epochs=200", "trainer.patience=200"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(t.state == TrialState.RUNNING for t in _study(study_dir).get_trials(deepcopy=False)):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = [t for t in _study(study_dir).get_trials() if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    time.sleep(2.5)  # past the heartbeat grace period: the killed trial is stale

    summary = tune([*common, "hparams_search.n_trials=5", "trainer.max_epochs=2"], log=lambda _: None)
    trials = _study(study_dir).get_trials()
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 5 == summary["completed_trials"]
    stale = next(t for t in trials if t.number == killed[0].number)
    assert stale.state == TrialState.FAIL
    # the failed trial was retried with the same parameters
    assert any(t.state == TrialState.COMPLETE and t.params == stale.params and t.number > stale.number for t in trials)
    assert (study_dir / "best.yaml").is_file()


def test_search_space_syntax_maps_to_optuna_distributions():
    pytest.importorskip("optuna")
    import optuna.distributions as D

    from cdrbench.errors import ConfigError
    from cdrbench.sweeps.tune import distribution

    assert distribution("a", "tag(log, interval(1e-4, 1e-2))") == D.FloatDistribution(1e-4, 1e-2, log=True)
    assert distribution("a", "choice(32, 64)") == D.CategoricalDistribution([32, 64])
    assert distribution("a", "range(1, 4)") == D.IntDistribution(1, 3, step=1)  # Hydra's range excludes 4
    assert distribution("a", "interval(0.1, 0.5)") == D.FloatDistribution(0.1, 0.5)
    with pytest.raises(ConfigError, match="hparams_search.params.a='3' is not a sweep"):
        distribution("a", "3")
