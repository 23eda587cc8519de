#!/usr/bin/env bash
# Runs on every TPU worker (launch/tpu.sh setup): installs this checkout for the TPU, and with
# --with-t5x real t5x the way t5x's README says (clone, then `pip install -e '.[tpu]'`).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly SRC
readonly LIBTPU_RELEASES="https://storage.googleapis.com/jax-releases/libtpu_releases.html"
readonly T5X_DIR="$HOME/t5x"

if [[ "${1:-}" == --with-t5x ]]; then
  [[ -d "$T5X_DIR" ]] || git clone --branch=main https://github.com/google-research/t5x "$T5X_DIR"
  python3 -m pip install -e "${T5X_DIR}[tpu]" -f "$LIBTPU_RELEASES"
elif [[ $# -gt 0 ]]; then
  echo "worker_setup.sh: unknown argument $1 (only --with-t5x)" >&2
  exit 2
fi

# The project last, so its pinned stack (the one t5x is tested with here) wins.
python3 -m pip install -e "$SRC"
# The TPU build of the jax version the project pins (pulls libtpu).
jax_version="$(python3 -c 'import jax; print(jax.__version__)')"
python3 -m pip install "jax[tpu]==$jax_version" -f "$LIBTPU_RELEASES"
python3 -c 'import jax; print("worker", jax.process_index(), "sees", jax.device_count(), "TPU devices")'
