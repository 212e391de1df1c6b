"""scripts/gpu_check.sh must work blind on a machine with a GPU: its toy mode runs here on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_device_check_script_dry_run_prints_every_cell(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--json", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout.split("\n\n")[-1]
    for check in ("bignas", "eval", "lightgcn"):
        line = next(row for row in table.splitlines() if row.strip().startswith(check))
        assert line.rstrip().endswith("ok"), line
    cells = json.loads(out.read_text())["cells"]
    assert set(cells) == {"bignas/cpu", "eval/cpu", "lightgcn/cpu"}
    assert cells["bignas/cpu"]["s_per_iteration"] > 0 and cells["bignas/cpu"]["s_per_outer_step"] > 0
    assert cells["eval/cpu"]["users"] > 0


def test_device_check_without_cuda_says_so_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
