#!/usr/bin/env bash
# Rerun the HAGO paper (SIGIR 2025): Table 1 (overall), Table 3 (coordinator designs), Table 4
# (GCN/GAT backbones), Table 5 (BGRL/COSTA pre-training) and Figure 3 (coordinator count K), on
# Douban (Music + Movie -> Book; RecBole-CDR Douban.zip, placed in $CDRBENCH_DATA/douban-recbole/)
# and Amazon (Books + Electronics + Movies -> Toys; $CDRBENCH_DATA/amazon2018/), then the reports.
# For a GPU machine with the data. The hago/* presets and the HAGO method are added when HAGO is
# merged; this script names them as the reproduction issue does.
#
#   scripts/reproduce_hago.sh [OUT_DIR] [Hydra overrides...]
set -uo pipefail
out="${1:-outputs/reproduce/hago}"
shift || true
status=0
presets=(hago/table1 hago/table3_variants hago/table4_backbones hago/table5_pretrain hago/figure3_coords)
conf="$(python -c 'import cdrbench.conf, os; print(os.path.dirname(cdrbench.conf.__file__))')"
for preset in "${presets[@]}"; do
  if [ ! -f "$conf/experiment/$preset.yaml" ]; then
    echo "reproduce_hago.sh: preset experiment=$preset is not in this cdrbench ($conf/experiment/$preset.yaml)" >&2
    exit 2
  fi
done
for preset in "${presets[@]}"; do
  dir="$out/${preset#hago/}"
  python -m cdrbench -m "experiment=$preset" "hydra.sweep.dir=$dir" report.after_multirun=false "$@" || status=1
  python -m cdrbench report "$dir" || status=1
done
exit "$status"
