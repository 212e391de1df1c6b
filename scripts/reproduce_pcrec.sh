#!/usr/bin/env bash
# Rerun the PCRec paper (CogMI 2021): Table II (overall), Table III (hops and fine-tuning model) and
# Table IV (ways to transfer) on Amazon 2018 Grocery_and_Gourmet_Food -> Prime_Pantry
# ($CDRBENCH_DATA/amazon2018/*_5.json.gz, downloaded when missing), then the reports. For a GPU
# machine with the data. The pcrec/* presets and the PCRec method are added when PCRec is merged;
# this script names them as the reproduction issue does.
#
#   scripts/reproduce_pcrec.sh [OUT_DIR] [Hydra overrides...]
set -uo pipefail
out="${1:-outputs/reproduce/pcrec}"
shift || true
status=0
presets=(pcrec/table2 pcrec/table3_hops pcrec/table4_transfer)
conf="$(python -c 'import cdrbench.conf, os; print(os.path.dirname(cdrbench.conf.__file__))')"
for preset in "${presets[@]}"; do
  if [ ! -f "$conf/experiment/$preset.yaml" ]; then
    echo "reproduce_pcrec.sh: preset experiment=$preset is not in this cdrbench ($conf/experiment/$preset.yaml)" >&2
    exit 2
  fi
done
for preset in "${presets[@]}"; do
  dir="$out/${preset#pcrec/}"
  python -m cdrbench -m "experiment=$preset" "hydra.sweep.dir=$dir" report.after_multirun=false "$@" || status=1
  python -m cdrbench report "$dir" || status=1
done
exit "$status"
