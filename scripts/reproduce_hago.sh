#!/usr/bin/env bash
# Rerun the HAGO paper (SIGIR 2025): Table 1 (overall), Table 3 (coordinator designs), Table 4
# (GCN/GAT backbones), Table 5 (BGRL/COSTA pre-training) and Figure 3 (coordinator count K), on
# Douban (Music + Movie -> Book; RecBole-CDR Douban.zip, placed in $CDRBENCH_DATA/douban-recbole/)
# and Amazon (Books + Electronics + Movies -> Toys; $CDRBENCH_DATA/amazon2018/), then the reports.
# For a GPU machine with the data (presets: conf/experiment/hago/). Table 5's Backbone row is the
# backbone run of Table 3: `cdrbench report OUT_DIR --paper hago/table5` shows both together.
#
#   scripts/reproduce_hago.sh [OUT_DIR] [Hydra overrides...]
set -uo pipefail
out="${1:-outputs/reproduce/hago}"
shift || true
. "$(dirname "$0")/_reproduce_lib.sh"
presets=(hago/table1 hago/table3_variants hago/table4_backbones hago/table5_pretrain hago/figure3_coords)
require_presets "${presets[@]}"
for preset in "${presets[@]}"; do
  sweep "$preset" "$out/${preset#hago/}" "$@"
  report "$out/${preset#hago/}"
done
exit "$status"
