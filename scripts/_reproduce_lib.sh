# Shared by scripts/reproduce_*.sh (sourced, not run): check presets exist, run a preset's sweep.
# A failed sweep sets status=1 and the script goes on (the report covers what finished).
status=0
conf="$(python -c 'import cdrbench.conf, os; print(os.path.dirname(cdrbench.conf.__file__))')"

require_presets() {  # <preset>...
  local preset
  for preset in "$@"; do
    if [ ! -f "$conf/experiment/$preset.yaml" ]; then
      echo "$(basename "$0"): preset experiment=$preset is not in this cdrbench ($conf/experiment/$preset.yaml)" >&2
      exit 2
    fi
  done
}

sweep() {  # <preset> <sweep dir> [Hydra overrides...]
  local preset="$1" dir="$2"
  shift 2
  python -m cdrbench -m "experiment=$preset" "hydra.sweep.dir=$dir" report.after_multirun=false "$@" || status=1
}

report() {  # <directory>
  python -m cdrbench report "$1" || status=1
}
