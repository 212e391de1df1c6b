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
    hydra_main()


if __name__ == "__main__":
    main()
