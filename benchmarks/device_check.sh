#!/usr/bin/env bash
# What debiaskit does on this machine's CUDA GPU: epoch times of Vanilla and LfF on Colored
# MNIST and Corrupted CIFAR-10 (float32 / bf16, with and without torch.compile), a short
# LfF vs Vanilla pair, seed packing; one JSON (benchmarks/device_check.py says what).
#
#   bash benchmarks/device_check.sh [--out FILE] [--train-subset N] [--pair-epochs N] [--no-compile]
#
# PYTHON names the interpreter (default: python), with debiaskit installed (pip install -e .);
# DEBIASKIT_DATA the data directory. Without a CUDA GPU it prints one line and exits 0.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "device_check: cannot find $PYTHON; set PYTHON=/path/to/python" >&2
    exit 2
fi
if ! "$PYTHON" -c "import torch, debiaskit" 2>/dev/null; then
    echo "device_check: $PYTHON cannot import torch and debiaskit; pip install -e . first (or set PYTHON)" >&2
    exit 2
fi
# torch.cuda.is_available() first: without a CUDA GPU, say so in one line and write nothing
status=0
reason="$("$PYTHON" "$here/device_check.py" --probe)" || status=$?
if [ "$status" -eq 1 ]; then
    echo "$reason"
    exit 0
elif [ "$status" -ne 0 ]; then
    exit "$status"
fi
exec "$PYTHON" "$here/device_check.py" "$@"
