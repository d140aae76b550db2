#!/usr/bin/env bash
# The GPU check of issue 17: one table in at most 8 minutes on one large GPU (see benchmarks/gpu_check.py).
#
#   bash benchmarks/gpu_check.sh                              # on the GPU machine, from anywhere
#   LIT_ALIGN_GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh   # CPU dry run at tiny size (tests/test_gpu_check.py)
#
# The GPU image lacks `datasets` and `jsonargparse`: put their wheels (and trl's, to get the TRL row)
# with their dependencies in $LIT_ALIGN_WHEELS (default: shared/wheels) and they are installed first,
# offline.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="${LIT_ALIGN_WHEELS:-shared/wheels}"
if [ -d "$WHEELS" ]; then
    for package in datasets jsonargparse trl; do
        if ! python -c "import $package" 2>/dev/null && ls "$WHEELS" | grep -qi "^${package}-"; then
            python -m pip install --quiet --no-index --find-links "$WHEELS" "$package"
        fi
    done
fi
export TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
# Prefix sharing's FlexAttention block mask: forward and (CUDA only) backward against the dense mask.
timeout 120 python benchmarks/flex_check.py || echo "flex_check failed (see above); the table follows"
exec timeout "${LIT_ALIGN_GPU_CHECK_TIMEOUT:-480}" python benchmarks/gpu_check.py "$@"
