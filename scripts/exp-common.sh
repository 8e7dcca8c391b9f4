# Shared by the experiment scripts (scripts/exp-*): arguments, the model of the experiments, one
# training run -> one CSV row, and the report. Sourced after common.sh, not run.
#
# Every experiment script takes:
#   --quick         a tiny model for a few steps (seconds): checks that everything works, says
#                   nothing about the paper; writes to runs/experiments-quick unless --out-dir is given
#   --out-dir DIR   where the CSV/JSONL, curves, PNGs and the report go (default: results/experiments;
#                   only that default also regenerates the experiments section of results/README.md)
# Environment: DATA=FILE (default ../shared/data/tinyshakespeare.txt beside the repository, else
# data/tinyshakespeare.txt, else downloaded), THREADS=N (default: all cores; 1 in quick mode).

QUICK=0
OUT_DIR=""
parse_exp_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --quick) QUICK=1 ;;
      --out-dir) [ $# -ge 2 ] || die "--out-dir needs a directory"; OUT_DIR="$2"; shift ;;
      --out-dir=*) OUT_DIR="${1#--out-dir=}" ;;
      -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      *) die "unknown argument '$1' (expected --quick, --out-dir DIR)" ;;
    esac
    shift
  done
  if [ -z "$OUT_DIR" ]; then
    if [ "$QUICK" = 1 ]; then OUT_DIR="$ROOT/runs/experiments-quick"; else OUT_DIR="$ROOT/results/experiments"; fi
  fi
  mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
  OUT_DIR="$(cd "$OUT_DIR" && pwd)"
  MODE=full; [ "$QUICK" = 1 ] && MODE=quick
  # the model of all three experiments; steps, warm-up and evaluation are set by each script
  if [ "$QUICK" = 1 ]; then
    MODEL=(--layers 1 --d-model 32 --heads 2 --d-ff 32 --batch-size 8 --seq-len 32)
    EVAL=(--eval-every 5 --eval-batches 4 --final-eval-batches 4)
  else
    MODEL=(--layers 4 --d-model 128 --heads 4 --d-ff 256 --batch-size 16 --seq-len 64)
    # periodic and final evaluation on the same 40 fixed validation batches (40,960 characters,
    # 37 % of the split), so that the last point of a curve is comparable with the others
    EVAL=(--eval-every 100 --eval-batches 40 --final-eval-batches 40)
  fi
  DATA_ARGS=()
  local d
  for d in "${DATA:-}" "$ROOT/../shared/data/tinyshakespeare.txt" "$ROOT/data/tinyshakespeare.txt"; do
    if [ -n "$d" ] && [ -f "$d" ]; then DATA_ARGS=(--data "$d"); break; fi
  done
  [ -z "${DATA:-}" ] || [ -f "$DATA" ] || die "DATA=$DATA: no such file"
  # quick mode: one thread (a tiny model gains nothing from two, and loses much when the cores are busy)
  THREAD_ARGS=(--threads "${THREADS:-$([ "$QUICK" = 1 ] && echo 1 || nproc)}")
  build_if_needed
  command -v python3 >/dev/null 2>&1 || die "python3 not found (the experiment scripts use it for tables)"
  local cpu
  cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//; s/,/ /g')"
  MACHINE="$(hostname | tr ',' ' ') ($(nproc) cores; ${cpu:-unknown cpu})"
  REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [ "$REV" != unknown ] && [ -n "$(cd "$ROOT" && git status --porcelain --untracked-files=no -- src pom.xml scripts 2>/dev/null)" ]; then
    REV="$REV-dirty"
  fi
}

# Starts an experiment's outputs afresh: its CSV, JSONL, curves and run directories.
begin_experiment() {
  EXP="$1"
  rm -rf "$OUT_DIR/$EXP.csv" "$OUT_DIR/$EXP.jsonl" "$OUT_DIR/curves/$EXP" "$OUT_DIR/runs/$EXP"
  EXP_T0=$SECONDS
  echo "== $EXP ($MODE mode) -> $OUT_DIR"
}

# exp_run RUN MODEL_NAME EXPERTS CAPACITY_FACTOR SEED [train flags...]: trains one run into
# OUT_DIR/runs/EXP/RUN (its checkpoints are deleted afterwards: only the metrics are kept), then
# appends its row to OUT_DIR/EXP.csv and EXP.jsonl and writes its curve to OUT_DIR/curves/EXP/RUN.jsonl.
exp_run() {
  local run="$1" model="$2" experts="$3" cf="$4" seed="$5"
  shift 5
  local dir="$OUT_DIR/runs/$EXP/$run" t0=$SECONDS
  local flags=("${MODEL[@]}" "$@" --capacity-factor "$cf" --seed "$seed")
  if [ "$model" = dense ]; then flags+=(--dense); else flags+=(--experts "$experts"); fi
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "-- $EXP/$run: train ${flags[*]}"
  if ! run_jar train --quiet --sample-length 0 --save-every 0 --keep 1 "${THREAD_ARGS[@]}" "${DATA_ARGS[@]}" \
      "${EVAL[@]}" "${flags[@]}" --out "$dir" > "$dir/train.log"; then
    tail -n 20 "$dir/train.log" >&2
    die "$EXP/$run failed (log: $dir/train.log)"
  fi
  rm -rf "$dir/checkpoints"
  local meta
  meta="$(python3 -c 'import json,sys; print(json.dumps(dict(zip(["date","machine","rev","mode","model","experts","capacity_factor","seed","flags"], sys.argv[1:]))))' \
    "$(date -u +%FT%TZ)" "$MACHINE" "$REV" "$MODE" "$model" "$experts" "$cf" "$seed" "${flags[*]}")"
  python3 "$ROOT/scripts/exp_tools.py" summarize --exp "$EXP" --run "$run" --dir "$dir" --out-dir "$OUT_DIR" --meta "$meta" \
    | sed "s/\$/ ($((SECONDS - t0)) s)/"
}

# chart KIND ARGS...: `chart` of the project's CLI (XChart), quietly.
chart() { run_jar chart "$@" > /dev/null; echo "   chart ${*: -1}"; }

# The curve files of the runs named, in order.
curves_of() { local r; for r in "$@"; do printf '%s\n' "$OUT_DIR/curves/$EXP/$r.jsonl"; done; }

# Regenerates the report from whatever CSVs exist: OUT_DIR/README.md, and for the default output
# directory the experiments section of results/README.md too.
end_experiment() {
  python3 "$ROOT/scripts/exp_tools.py" report --out-dir "$OUT_DIR" --readme "$OUT_DIR/README.md" > /dev/null
  if [ "$OUT_DIR" = "$ROOT/results/experiments" ]; then
    python3 "$ROOT/scripts/exp_tools.py" report --out-dir "$OUT_DIR" --readme "$ROOT/results/README.md" --img-prefix experiments/
  fi
  echo "== $EXP done in $((SECONDS - EXP_T0)) s: $OUT_DIR/$EXP.csv"
}
