"""``python -m cdrbench`` / ``cdrbench``: the Hydra entry point.

The only module (with :mod:`cdrbench.app`) that reads the config: it composes it, validates it,
and dispatches on ``stage``.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from cdrbench.config import register_configs
from cdrbench.errors import CdrbenchError


def _register() -> None:
    register_configs()
    # per-process id used in run directory names, so concurrent runs never share a directory
    if not OmegaConf.has_resolver("cdrbench.pid"):
        OmegaConf.register_new_resolver("cdrbench.pid", lambda: os.getpid())
    # baselines train with BCE on click labels when only CTR is evaluated, else with BPR
    if not OmegaConf.has_resolver("cdrbench.default_loss"):
        OmegaConf.register_new_resolver("cdrbench.default_loss", lambda tasks: "bce" if list(tasks) == ["ctr"] else "bpr")


_register()


@hydra.main(version_base=None, config_path="pkg://cdrbench.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from cdrbench import app

    try:
        app.run(cfg)
    except CdrbenchError as error:
        print(f"cdrbench: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


def main() -> None:
    hydra_main()


if __name__ == "__main__":
    main()
