"""``python -m cdrbench`` / ``cdrbench``: the Hydra entry point.

The only module (with :mod:`cdrbench.app`) that reads the config: it composes it, validates it,
and dispatches on ``stage``. It imports nothing heavy itself: the config is checked first
(:func:`cdrbench.validate.check_config`, milliseconds), and only then :mod:`cdrbench.app` brings
in torch and PyG, so a bad value costs about a second.

Exit codes follow one rule for every user error (see :mod:`cdrbench.errors`): 2 with one message
naming the key, file or path and no traceback, for cdrbench's own checks, for Hydra's override
and composition errors and for file-system errors; 1 (with a traceback) only for a bug;
130/143 for SIGINT/SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cdrbench.config import register_configs
from cdrbench.errors import EXIT_SIGINT, EXIT_SIGTERM, EXIT_USER_ERROR, CdrbenchError, Terminated

register_configs()

#: set once Hydra has composed the config and called the task: errors before it are Hydra's
_task_started = False
#: files Hydra itself writes into a run directory (a directory holding nothing else is removed
#: after a failure, so a rejected command leaves no empty run folder behind)
_HYDRA_FILES = (".hydra",)


def _fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    print(f"cdrbench: error: {message}", file=sys.stderr)
    sys.exit(code)


def _os_error_message(error: OSError) -> str:
    where = f": {error.filename}" if error.filename else ""
    return f"{error.strerror or error}{where}"


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


def _remove_if_untouched(run_dir: Path, output_root: Path) -> None:
    """Remove ``run_dir`` (and its empty parents up to ``output_root``) when it holds only what
    Hydra wrote before the task started: the command failed before doing anything."""
    if not run_dir.is_dir():
        return
    if any(p.name not in _HYDRA_FILES and not p.name.endswith(".log") for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    try:
        while parent != output_root and output_root in parent.parents and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    except OSError:
        pass


@hydra.main(version_base=None, config_path="pkg://cdrbench.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    global _task_started
    _task_started = True
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        from hydra.types import RunMode

        from cdrbench.validate import check_config

        # a multirun job's config error must fail that job only (app.run records it), not the sweep
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            check_config(cfg)
        from cdrbench import app  # heavy imports (torch, PyG) only for a config that passed

        app.run(cfg, run_dir)
    except CdrbenchError as error:
        _remove_if_untouched(run_dir, Path(str(cfg.output_root)).resolve())
        _fail(str(error), error.exit_code)
    except OSError as error:  # a path the user gave (output_root, data.root) cannot be used
        _remove_if_untouched(run_dir, Path(str(cfg.output_root)).resolve())
        _fail(_os_error_message(error))
    except KeyboardInterrupt as error:
        terminated = isinstance(error, Terminated)
        print(f"cdrbench: interrupted ({'SIGTERM' if terminated else 'SIGINT'}); an unfinished run "
              "continues with trainer.resume=true", file=sys.stderr)
        sys.exit(EXIT_SIGTERM if terminated else EXIT_SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _hydra_error_message(error: BaseException) -> str:
    from omegaconf.errors import OmegaConfBaseException

    parts = [str(error)]
    if isinstance(error.__cause__, OmegaConfBaseException):
        parts.append(str(error.__cause__))
    lines: list[str] = []
    for raw in (line for part in parts for line in part.splitlines()):
        line = raw.strip()
        if not line or line.startswith(("reference_type=", "object_type=", "provider=", "Config search path")):
            continue
        if raw.startswith("\t") and lines and lines[-1].endswith((":", ",")):  # a list of options: one line
            lines[-1] += (" " if lines[-1].endswith(":") else " ") + line + ","
            continue
        lines.append(line)
    return "\n  ".join(line.rstrip(",") for line in lines)


def main() -> None:
    """Run Hydra; its own errors (bad override, missing config, unwritable run directory) raised
    before the task starts are user errors too: one message, exit code 2."""
    # subcommands that are not a Hydra job: `cdrbench report <dir>` and `cdrbench tune ...`
    # (an `hparams_search=<method>` override on a plain command line means `tune` too)
    args = sys.argv[1:]
    if args[:1] == ["report"]:
        from cdrbench.report.cli import main as report_main

        sys.exit(report_main(args[1:]))
    if args[:1] == ["tune"] or any(a.startswith("hparams_search=") for a in args):
        from cdrbench.sweeps.tune import main as tune_main

        sys.exit(tune_main([a for a in args if a not in ("tune", "-m", "--multirun")]))
    global _task_started
    _task_started = False
    before = os.environ.get("HYDRA_FULL_ERROR")
    user_wants_full_error = before == "1"
    # Hydra then raises its errors instead of printing a trimmed traceback and exiting 1
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except KeyboardInterrupt:
        print("cdrbench: interrupted (SIGINT)", file=sys.stderr)
        sys.exit(EXIT_SIGINT)
    except Exception as error:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if user_wants_full_error or _task_started:
            raise  # a bug (or asked for): the full traceback
        if isinstance(error, (HydraException, OmegaConfBaseException, ValueError)):
            _fail(_hydra_error_message(error))
        if isinstance(error, OSError):
            _fail(f"cannot create the run directory: {_os_error_message(error)}")
        raise
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


if __name__ == "__main__":
    main()
