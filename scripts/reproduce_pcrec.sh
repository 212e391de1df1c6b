#!/usr/bin/env bash
# Rerun the PCRec paper (CogMI 2021): Table II (overall), Table III (hops and fine-tuning model) and
# Table IV (ways to transfer) on Amazon 2018 Grocery_and_Gourmet_Food -> Prime_Pantry
# ($CDRBENCH_DATA/amazon2018/*_5.json.gz, downloaded when missing), then the reports. For a GPU
# machine with the data (presets: conf/experiment/pcrec/). Table IV's LGCN row is the lightgcn run
# of Table II: `cdrbench report OUT_DIR --paper pcrec/table4` shows both together.
#
#   scripts/reproduce_pcrec.sh [OUT_DIR] [Hydra overrides...]
set -uo pipefail
out="${1:-outputs/reproduce/pcrec}"
shift || true
. "$(dirname "$0")/_reproduce_lib.sh"
presets=(pcrec/table2 pcrec/table3_hops pcrec/table4_transfer)
require_presets "${presets[@]}"
for preset in "${presets[@]}"; do
  sweep "$preset" "$out/${preset#pcrec/}" "$@"
  report "$out/${preset#pcrec/}"
done
exit "$status"
