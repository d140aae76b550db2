#!/usr/bin/env bash
# Remeasure every table of benchmarks/README.md and the issue-17 targets: one command, run on an
# IDLE machine (timings under load are meaningless; peak RSS is not). About 11 minutes on 2 cores.
#
#   PYTHONPATH=/tmp/trl_env bash benchmarks/run_tables.sh [OUT_DIR]    # TRL importable: the TRL rows and ratios
#   LIT_ALIGN_TABLES_TINY=1 bash benchmarks/run_tables.sh /tmp/tables   # dry run at tiny size: every run completes
#
# Writes OUT_DIR (default runs/tables-<UTC time>, git-ignored): short.json, long.json, memory.json (each
# bench_algorithms.py --out), and tables.md: the three tables and the targets table, ready to paste.
# Tables (see benchmarks/README.md):
#   1. short, variable-length workload, tiny-llama-32k: defaults, grouping, prefix sharing with a
#      live and a precomputed reference, against TRL live and precomputed;
#   2. long-prompt workload: prefix sharing on/off, with and without grouping, against TRL;
#   3. llama-88m (88.1M parameters): peak RSS of a live and a precomputed reference against TRL's
#      (4 steps: the peak is reached by the second; 128 pairs keep the precompute passes short).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/tables-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
export TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore

if [ -n "${LIT_ALIGN_TABLES_TINY:-}" ]; then
    # Dry run: the embedded model, 1 timed step; checks the commands, not the numbers.
    SHORT=(--model embedded:tiny --examples 40 --batch-size 4 --steps 1 --warmup 1)
    LONG=("${SHORT[@]}")
    MEMORY=("${SHORT[@]}")
else
    SHORT=(--steps 20 --warmup 3 --examples 512)
    LONG=(--steps 8 --warmup 2 --examples 512)
    MEMORY=(--model llama-88m --steps 2 --warmup 2 --examples 128)
fi
if ! python -c "import trl" 2>/dev/null; then
    echo "run_tables.sh: TRL is not importable, so the TRL rows and every 'vs TRL' target will be missing." >&2
    echo "  pip install --no-deps --target /tmp/trl_env trl==1.16.0 accelerate; PYTHONPATH=/tmp/trl_env bash $0" >&2
fi

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
started=$SECONDS
bench() {  # name, then bench_algorithms.py arguments
    local name=$1
    shift
    local t0=$SECONDS
    python benchmarks/bench_algorithms.py "$@" --out "$OUT/$name.json" | tee "$OUT/$name.txt"
    echo "[$name: $((SECONDS - t0)) s]"
}
bench short --runs dpo-defaults,dpo-copy,dpo-copy-grouped,dpo-copy-grouped-shared,dpo-precomputed-grouped,dpo-precomputed-grouped-shared,trl-dpo-nogc,trl-dpo-precomputed-nogc "${SHORT[@]}"
bench long --workload long-prompt --runs dpo-copy,dpo-copy-shared,dpo-copy-grouped,dpo-copy-grouped-shared,trl-dpo-nogc "${LONG[@]}"
bench memory --runs dpo-copy,dpo-precomputed,trl-dpo-nogc,trl-dpo-precomputed-nogc "${MEMORY[@]}"

{
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- lit_align benchmarks || echo ' (with uncommitted changes)'), in $((SECONDS - started)) s."
    echo "Load average before / after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg)."
    for name in short long memory; do
        echo
        echo "### $name"
        echo
        sed -n '/^command: /,$p' "$OUT/$name.txt"
    done
    echo
    echo "### Targets (issue 17)"
    echo
    python benchmarks/targets.py --short "$OUT/short.json" --long "$OUT/long.json" --memory "$OUT/memory.json"
} > "$OUT/tables.md"
cat "$OUT/tables.md"
echo "run_tables.sh: $((SECONDS - started)) s; tables in $OUT/tables.md"
