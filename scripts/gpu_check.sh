#!/usr/bin/env bash
# A prepared GPU check for a developer who finds a GPU lent (under 8 minutes on one GPU):
#   1. the test suite's CUDA tests (those that skip without CUDA);
#   2. scripts/gpu_check.py: BiGNAS iterations + an outer step on a Bo-Mo-size synthetic pair,
#      a full-ranking evaluation of an 18 k x 33 k table, LightGCN epochs at that size; each on
#      the GPU and on the CPU, with peak memory, printed as one table.
# Usage (from anywhere): scripts/gpu_check.sh            # needs CUDA
#                        scripts/gpu_check.sh --dry-run  # toy sizes, CPU only, no tests (seconds)
# Extra arguments go to gpu_check.py (e.g. --json gpu_check.json, --cpu-threads 8).
# Exit code: 0 all ok, 1 a test or a cell failed, 2 no CUDA device.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
status=0
if [[ "${1:-}" == "--dry-run" ]]; then
    echo "== dry run: toy sizes on the CPU; the CUDA tests are not run"
else
    if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check.sh: no CUDA device is visible to torch; use --dry-run on a CPU" >&2
        exit 2
    fi
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
    echo "== CUDA tests"
    "$PYTHON" -m pytest -q -rs -k "cuda or gpu" tests
    rc=$?
    # 5 = no test selected: say so, it is not a failure of the device
    if [[ $rc -eq 5 ]]; then echo "(no CUDA test selected)"; elif [[ $rc -ne 0 ]]; then status=1; fi
fi
echo "== measurements"
"$PYTHON" scripts/gpu_check.py "$@"
rc=$?
if [[ $rc -ne 0 ]]; then status=$rc; fi
exit $status
