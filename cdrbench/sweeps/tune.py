"""``cdrbench tune hparams_search=<method> [overrides]``: an Optuna search (current Optuna, TPE,
seeded) over the space in ``conf/hparams_search/<method>.yaml``, stored in SQLite so that a
killed study resumes where it stopped when the same command runs again.

Why not Hydra's Optuna sweeper plugin: ``hydra-optuna-sweeper`` 1.3 requires ``optuna<3``, whose
SQLite storage needs ``SQLAlchemy<2`` and ``alembic<1.14`` (``shared/design/plugins.md``); its
``n_trials`` adds trials on every rerun instead of finishing a study, and a killed trial stays
RUNNING forever. Here ``hparams_search.n_trials`` is the number of *completed* trials the study
must reach; a trial left RUNNING by a killed process is detected by Optuna's heartbeat, marked
failed and retried with the same parameters.

* Search space: ``hparams_search.params``, ``<config key>: <Hydra sweep expression>``, the
  syntax of the Hydra Optuna sweeper: ``choice(a, b)``, ``range(lo, hi, step)`` (upper bound
  excluded), ``interval(lo, hi)``, ``tag(log, interval(lo, hi))``.
* Objective: the validation value of the metric the run selects its epoch on
  (``trainer.monitor``, or the method's default) at the selected epoch. Never a test metric.
* Each trial is one ordinary run (``cdrbench.app.run_training``) in
  ``<hparams_search.dir>/trial_<n>``; the study's trials, the best parameters (``best.yaml``) and
  the report of the trial runs are written there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml
from omegaconf import OmegaConf

from cdrbench.errors import CdrbenchError, ConfigError


def distribution(key: str, expression: str):
    """An Optuna distribution from a Hydra sweep expression (as hydra-optuna-sweeper reads it)."""
    import optuna.distributions as D
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    try:
        override = OverridesParser.create().parse_override(f"{key}={expression}")
    except Exception as error:
        raise ConfigError(f"hparams_search.params.{key}={expression!r}: {error}") from error
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return D.CategoricalDistribution([v for v in value.list])
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if all(isinstance(x, int) for x in (start, stop, step)):
            return D.IntDistribution(int(start), int(stop) - int(step), step=int(step))
        return D.FloatDistribution(float(start), float(stop) - float(step), step=float(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return D.IntDistribution(value.start, value.end, log=log)
        return D.FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(
        f"hparams_search.params.{key}={expression!r} is not a sweep: use choice(...), range(...), interval(...) or tag(log, interval(...))"
    )


def suggest(trial, key: str, dist):
    import optuna.distributions as D

    if isinstance(dist, D.CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, D.IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


def _override_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def _search_settings(cfg):
    hs = cfg.get("hparams_search")
    if hs is None:
        raise ConfigError("cdrbench tune needs a search space: hparams_search=<method> (conf/hparams_search/)")
    hs = OmegaConf.to_container(hs, resolve=True)
    for key in ("n_trials", "params"):
        if not hs.get(key):
            raise ConfigError(f"hparams_search.{key} is missing or empty")
    if int(hs["n_trials"]) < 1:
        raise ConfigError(f"hparams_search.n_trials must be >= 1, got {hs['n_trials']}")
    return hs


def tune(overrides: Sequence[str], log=print) -> dict:
    """Run (or resume) the study; returns ``{"best_value", "best_params", "trials", "dir"}``."""
    from cdrbench.app import default_monitor, run_training
    from cdrbench.config import compose

    try:
        import optuna
        from optuna.storages import RDBStorage, RetryFailedTrialCallback
        from optuna.trial import TrialState
    except ImportError as error:
        raise ConfigError("cdrbench tune needs Optuna: pip install 'cdrbench[sweep]'") from error

    base = [o for o in overrides if not o.startswith("hydra")]
    cfg = compose(base)
    hs = _search_settings(cfg)
    space = {key: distribution(key, str(expr)) for key, expr in hs["params"].items()}
    fixed = [o for o in base if o.split("=", 1)[0].lstrip("+~") not in space]
    dropped = [o for o in base if o not in fixed]
    if dropped:
        log(f"tune: ignoring {dropped}: these keys are searched")
    monitor = cfg.trainer.monitor or default_monitor(list(cfg.eval.tasks), list(cfg.eval.ks))
    direction = "minimize" if monitor == "logloss" else "maximize"
    study_dir = Path(hs["dir"])
    study_dir.mkdir(parents=True, exist_ok=True)
    url = hs.get("storage") or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    storage = RDBStorage(
        url, heartbeat_interval=int(hs.get("heartbeat_interval_s", 10)), grace_period=int(hs.get("heartbeat_grace_s", 30)),
        heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=int(hs.get("max_retry", 1))),
    )
    sampler = optuna.samplers.TPESampler(seed=int(hs.get("sampler_seed", 0)), n_startup_trials=int(hs.get("n_startup_trials", 5)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=hs["study_name"], storage=storage, sampler=sampler, direction=direction,
                                load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise ConfigError(f"study {hs['study_name']} in {url} was created to {study.direction.name.lower()}; "
                          f"this search would {direction} {monitor}")

    def objective(trial) -> float:
        params = {key: suggest(trial, key, dist) for key, dist in space.items()}
        trial_overrides = [*fixed, *(f"{k}={_override_value(v)}" for k, v in params.items())]
        trial_cfg = compose(trial_overrides)
        run_dir = study_dir / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        log(f"tune: trial {trial.number}: {' '.join(f'{k}={_override_value(v)}' for k, v in params.items())}")
        results = run_training(trial_cfg, run_dir)
        value = results["valid"].get(results["monitor"])
        if value is None:
            raise ConfigError(f"trial {trial.number}: validation {results['monitor']} is undefined")
        log(f"tune: trial {trial.number}: valid {results['monitor']} = {value:.4f}")
        return float(value)

    def completed() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    failures, max_failures = 0, int(hs.get("max_failures", 3))
    if completed():
        log(f"tune: resuming study {hs['study_name']} ({url}): {completed()} of {hs['n_trials']} trials complete")
    while completed() < int(hs["n_trials"]):
        before = len(study.trials)
        try:
            study.optimize(objective, n_trials=1, catch=())
        except CdrbenchError:
            raise
        except Exception as error:  # a trial that crashed: recorded as failed by Optuna
            failures += 1
            log(f"tune: a trial failed ({type(error).__name__}: {error}); {failures} of at most {max_failures} failures")
            if failures >= max_failures:
                raise ConfigError(f"tune: {failures} trials failed; stopping (hparams_search.max_failures)") from error
        if len(study.trials) == before:  # nothing ran (should not happen): avoid a busy loop
            break
    best = study.best_trial
    summary = {
        "study": hs["study_name"], "storage": url, "direction": direction, "objective": f"valid {monitor}",
        "best_value": best.value, "best_params": best.params, "best_run_dir": best.user_attrs.get("run_dir"),
        "best_overrides": [f"{k}={_override_value(v)}" for k, v in best.params.items()],
        "completed_trials": completed(),
    }
    (study_dir / "best.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    trials = study.trials_dataframe(attrs=("number", "state", "value", "params"))
    trials.to_csv(study_dir / "trials.csv", index=False)
    return {**summary, "trials": trials, "dir": study_dir}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        summary = tune(argv)
    except CdrbenchError as error:
        print(f"cdrbench: error: {error}", file=sys.stderr)
        return error.exit_code
    trials = summary["trials"]
    print(f"\n{trials.to_string(index=False)}")
    print(f"\nbest {summary['objective']} = {summary['best_value']:.4f} with {' '.join(summary['best_overrides'])}")
    print(f"study {summary['study']} in {summary['storage']}; best.yaml and trials.csv in {summary['dir']}")
    try:
        from cdrbench.report.cli import write_report

        report = write_report(summary["dir"], split="valid", plots=False, log=lambda line: None)
        print(f"report of the trial runs (valid split): {report.out / 'report.md'}")
    except CdrbenchError as error:
        print(f"cdrbench: {error}", file=sys.stderr)
    return 0
