#!/usr/bin/env bash
# Rerun the BiGNAS paper (AAAI-25): Table 3 (7 Amazon tasks x BiGNAS and the single-domain
# baselines, 5 seeds) and Figure 2 (ablations on four tasks, MANUAL with every op), then the
# reports. For a GPU machine with the Amazon 2014 5-core files (downloaded into
# $CDRBENCH_DATA/amazon2014/ when missing; ~2.5 GB for Books). Estimated GPU time: README
# "Reproducing the papers".
#
#   scripts/reproduce_bignas.sh [OUT_DIR] [Hydra overrides...]
#   scripts/reproduce_bignas.sh outputs/reproduce/bignas hydra/launcher=ray_gpu   # one GPU per job
#
# Rerunning with the same OUT_DIR skips every finished job (same config hash and seed) and
# continues the rest; a failed job does not stop the others (the script exits 1 at the end).
set -uo pipefail
out="${1:-outputs/reproduce/bignas}"
shift || true
. "$(dirname "$0")/_reproduce_lib.sh"
require_presets bignas/table3 bignas/figure2_ablation bignas/figure2_manual
sweep bignas/table3 "$out/table3" "$@"
sweep bignas/figure2_ablation "$out/figure2/variants" "$@"
sweep bignas/figure2_manual "$out/figure2/manual" "$@"
report "$out/table3"
report "$out/figure2"   # both Figure 2 sweeps in one table
exit "$status"
