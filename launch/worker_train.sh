#!/usr/bin/env bash
# Runs on every TPU worker (launch/tpu.sh train): one training run, logged to a per-host file
# under ~/clinical_t5x_logs. Both trainers resume from the newest checkpoint in MODEL_DIR, so
# running this again after a preemption continues the same run.
#
# usage: worker_train.sh ENGINE VARIANT MODEL_DIR PRESET [GIN_NAME=VALUE ...]
#   ENGINE t5x|builtin; PRESET a gin/partitioning/ name or 'none'.
# Set CLINICAL_T5X_WORKER_DRY_RUN=1 to print the trainer command instead of running it, and
# T5X_ROOT to skip checking that t5x imports.
set -euo pipefail
# Logs and everything either trainer writes locally hold data derived from notes: owner-only.
umask 077

[[ $# -ge 4 ]] || { sed -n '6,7p' "$0" >&2; exit 2; }
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly SRC
ENGINE="$1" VARIANT="$2" MODEL_DIR="$3" PRESET="$4"
shift 4

gin_files=()
# Gin files name each other from the project root (gin/README.md), so both trainers run from
# $SRC with no search-path flag; t5x searches the folder holding its own package by itself.
cd "$SRC"
case "$ENGINE" in
  t5x)
    [[ -n "${T5X_ROOT:-}" ]] || python3 -c 'import t5x' 2>/dev/null ||
      { echo "worker_train.sh: t5x is not installed here (launch/tpu.sh setup --with-t5x)" >&2; exit 2; }
    cmd=(python3 -m t5x.train --alsologtostderr)
    gin_files+=("gin/clinical_$VARIANT.gin") ;;
  builtin)
    cmd=(python3 -m clinical_t5x.train)
    gin_files+=("gin/builtin/$VARIANT.gin") ;;
  *) echo "worker_train.sh: ENGINE must be t5x or builtin, not '$ENGINE'" >&2; exit 2 ;;
esac
[[ "$PRESET" == none ]] || gin_files+=("gin/partitioning/$PRESET.gin")
for f in "${gin_files[@]}"; do cmd+=("--gin_file=$f"); done
cmd+=("--gin.MODEL_DIR='$MODEL_DIR'")
for binding in "$@"; do cmd+=("--gin.$binding"); done

if [[ "${CLINICAL_T5X_WORKER_DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi

log_dir="$HOME/clinical_t5x_logs"
mkdir -p "$log_dir"
log="$log_dir/$VARIANT-$ENGINE-$(hostname).log"
pid_file="$log_dir/$VARIANT-$ENGINE.pid"
# A run left over from a dropped ssh session would hold the TPU: stop it (by its own pid).
# SIGTERM makes it checkpoint first, which can take minutes: wait until it has exited, so the
# new run neither finds the TPU busy nor resumes from an older checkpoint.
if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  old_pid="$(cat "$pid_file")"
  echo "stopping the previous run (pid $old_pid)" | tee -a "$log"
  kill "$old_pid" || true
  for _ in $(seq 120); do kill -0 "$old_pid" 2>/dev/null || break; sleep 5; done
  if kill -0 "$old_pid" 2>/dev/null; then
    echo "worker_train.sh: previous run (pid $old_pid) still running after 10 minutes" | tee -a "$log" >&2
    exit 1
  fi
fi
echo "=== $(date -u +%FT%TZ) start on $(hostname): ${cmd[*]}" >>"$log"
cd "$SRC"
rc=0
(echo "$BASHPID" >"$pid_file"; exec "${cmd[@]}") 2>&1 | tee -a "$log" || rc=$?
echo "=== $(date -u +%FT%TZ) exit status $rc" >>"$log"
rm -f "$pid_file"
exit "$rc"
