"""``python -m cdrbench`` / ``cdrbench``: the Hydra entry point.

The only module (with :mod:`cdrbench.app`) that reads the config: it composes it, validates it,
and dispatches on ``stage``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cdrbench.config import register_configs
from cdrbench.errors import CdrbenchError


register_configs()


@hydra.main(version_base=None, config_path="pkg://cdrbench.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from cdrbench import app

    try:
        app.run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except CdrbenchError as error:
        print(f"cdrbench: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


def main() -> None:
    # subcommands that are not a Hydra job: `cdrbench report <dir>` and `cdrbench tune ...`
    # (an `hparams_search=<method>` override on a plain command line means `tune` too)
    args = sys.argv[1:]
    if args[:1] == ["report"]:
        from cdrbench.report.cli import main as report_main

        sys.exit(report_main(args[1:]))
    if args[:1] == ["tune"] or any(a.startswith("hparams_search=") for a in args):
        from cdrbench.sweeps.tune import main as tune_main

        sys.exit(tune_main([a for a in args if a not in ("tune", "-m", "--multirun")]))
    hydra_main()


if __name__ == "__main__":
    main()
