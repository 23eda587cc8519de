#!/usr/bin/env bash
# Cloud TPU VM slices for clinical_t5x: create, setup, train, watch (auto-resume), status, logs,
# delete. Every cloud call is `gcloud compute tpus ...`; --dry-run prints them instead.
# Both trainers resume from the newest complete checkpoint in MODEL_DIR by themselves, so
# recovering from a preemption is: recreate the slice, reinstall, run the same train command.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
readonly PROG=tpu.sh
# shellcheck source=launch/common.sh
source "$HERE/common.sh"
# Paths on the workers; $HOME is expanded there, not here.
# shellcheck disable=SC2016
readonly REMOTE_SRC='$HOME/clinical_t5x' REMOTE_LOGS='$HOME/clinical_t5x_logs'
readonly REMOTE_TARBALL='clinical_t5x_src.tar.gz'  # in the worker's home directory

# Accelerator types accepted by `--accelerator-type` (v5e-N is an alias of v5litepod-N).
readonly ACCELERATORS=(
  v2-8 v2-32 v2-128 v2-256 v2-512
  v3-8 v3-32 v3-64 v3-128 v3-256 v3-512 v3-1024 v3-2048
  v4-8 v4-16 v4-32 v4-64 v4-128 v4-256 v4-512 v4-1024 v4-1536 v4-2048 v4-4096
  v5litepod-1 v5litepod-4 v5litepod-8 v5litepod-16 v5litepod-32 v5litepod-64 v5litepod-128
  v5litepod-256
  v5p-8 v5p-16 v5p-32 v5p-64 v5p-128 v5p-256 v5p-512 v5p-1024 v5p-2048
  v6e-1 v6e-4 v6e-8 v6e-16 v6e-32 v6e-64 v6e-128 v6e-256
)

usage() {
  cat <<'EOF'
usage: launch/tpu.sh COMMAND [VARIANT] [options]

commands:
  create             create the TPU VM slice (or a queued resource with --queued)
  setup              copy this checkout (files git would commit) to every worker and install
                     it (+ t5x with --with-t5x)
  train VARIANT      train VARIANT (tiny|base|sci|scratch|large) on all workers; blocks
  watch VARIANT      create/setup if needed, train, and on preemption or a dead run recreate
                     the slice and resume from the newest checkpoint in MODEL_DIR
  status             print the slice state (and the queued resource's state)
  logs               tail the training logs of every worker (--fetch DIR copies them here)
  delete             delete the slice (and the queued resource)

options (environment fallback in brackets):
  --project P        GCP project [CLOUDSDK_CORE_PROJECT]
  --zone Z           zone, e.g. us-central2-b [CLOUDSDK_COMPUTE_ZONE]
  --name N           TPU name (also the queued resource id) [TPU_NAME, default clinical-t5x]
  --accelerator T    accelerator type, e.g. v4-32, v5e-16, v5p-32 [TPU_ACCELERATOR]
  --version V        TPU runtime version (default: the base image for T's generation)
  --queued           create through a queued resource
  --spot             spot capacity (cheaper, preemptible)
  --with-t5x         setup: also install real t5x the way its README says
  --engine E         train: t5x (python -m t5x.train) or builtin (default builtin)
  --model-dir D      train: MODEL_DIR, must be gs://... [MODEL_DIR]
  --data-dir D       train: prepared shards on GCS [CLINICAL_T5X_DATA_DIR]
  --vocab-dir D      train: vocabulary folder on GCS [CLINICAL_T5X_VOCAB_DIR]
  --preset P         partitioning preset in gin/partitioning/ (default: from the accelerator;
                     'none' for no preset)
  --gin NAME=VALUE   extra gin binding for the trainer (repeatable)
  --max-retries N    watch: give up after N recoveries (default 20)
  --backoff S        watch: first wait in seconds before a recovery, doubling (default 60)
  --max-backoff S    watch: longest wait (default 1800)
  --poll S           seconds between state checks while a slice is starting (default 30)
  --wait-timeout S   longest wait for a slice to become READY (default 86400)
  --lines N          logs: lines per worker (default 100)
  --fetch DIR        logs: copy every worker's log folder into DIR
  --dry-run          print the commands instead of running them
  -h, --help         this help

exit status: 0 done, 1 a command failed, 2 bad usage or configuration, 3 quota or capacity,
             4 watch gave up after --max-retries recoveries
EOF
}


# ---------------------------------------------------------------------------------------------
# Options

COMMAND="" VARIANT=""
PROJECT="${CLOUDSDK_CORE_PROJECT:-}"
ZONE="${CLOUDSDK_COMPUTE_ZONE:-}"
NAME="${TPU_NAME:-clinical-t5x}"
ACCELERATOR="${TPU_ACCELERATOR:-}"
RUNTIME_VERSION="" QUEUED=0 SPOT=0 WITH_T5X=0 DRY_RUN=0
ENGINE="builtin"
MODEL_DIR="${MODEL_DIR:-}"
DATA_DIR="${CLINICAL_T5X_DATA_DIR:-}"
VOCAB_DIR="${CLINICAL_T5X_VOCAB_DIR:-}"
PRESET=""
GIN_BINDINGS=()
MAX_RETRIES=20 BACKOFF=60 MAX_BACKOFF=1800 POLL=30 WAIT_TIMEOUT=86400
LINES=100 FETCH_DIR=""
LOC=()  # --project/--zone flags for every gcloud call

parse_args() {
  local positional=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --project) need_value "$@"; PROJECT="$2"; shift ;;
      --zone) need_value "$@"; ZONE="$2"; shift ;;
      --name) need_value "$@"; NAME="$2"; shift ;;
      --accelerator|--accelerator-type) need_value "$@"; ACCELERATOR="$2"; shift ;;
      --version|--runtime-version) need_value "$@"; RUNTIME_VERSION="$2"; shift ;;
      --queued) QUEUED=1 ;;
      --spot) SPOT=1 ;;
      --with-t5x) WITH_T5X=1 ;;
      --engine) need_value "$@"; ENGINE="$2"; shift ;;
      --model-dir) need_value "$@"; MODEL_DIR="$2"; shift ;;
      --data-dir) need_value "$@"; DATA_DIR="$2"; shift ;;
      --vocab-dir) need_value "$@"; VOCAB_DIR="$2"; shift ;;
      --preset) need_value "$@"; PRESET="$2"; shift ;;
      --gin) need_value "$@"; GIN_BINDINGS+=("$2"); shift ;;
      --max-retries) need_value "$@"; MAX_RETRIES="$2"; shift ;;
      --backoff) need_value "$@"; BACKOFF="$2"; shift ;;
      --max-backoff) need_value "$@"; MAX_BACKOFF="$2"; shift ;;
      --poll) need_value "$@"; POLL="$2"; shift ;;
      --wait-timeout) need_value "$@"; WAIT_TIMEOUT="$2"; shift ;;
      --lines) need_value "$@"; LINES="$2"; shift ;;
      --fetch) need_value "$@"; FETCH_DIR="$2"; shift ;;
      --dry-run) DRY_RUN=1 ;;
      --*) die "unknown option $1 (see --help)" ;;
      *) positional+=("$1") ;;
    esac
    shift
  done
  set_command "${positional[@]}"
  require_whole_numbers MAX_RETRIES BACKOFF MAX_BACKOFF POLL WAIT_TIMEOUT LINES
}

# ---------------------------------------------------------------------------------------------
# Validation

require_location() {
  [[ -n "$PROJECT" ]] || die "missing project: pass --project PROJECT or export CLOUDSDK_CORE_PROJECT"
  [[ -n "$ZONE" ]] || die "missing zone: pass --zone ZONE (e.g. us-central2-b) or export CLOUDSDK_COMPUTE_ZONE"
  LOC=("--project=$PROJECT" "--zone=$ZONE")
}

# Normalises ACCELERATOR (v5e-N -> v5litepod-N) and rejects unknown types.
require_accelerator() {
  [[ -n "$ACCELERATOR" ]] || die "missing accelerator type: pass --accelerator (e.g. v4-32) or export TPU_ACCELERATOR"
  ACCELERATOR="${ACCELERATOR/#v5e-/v5litepod-}"
  local known
  for known in "${ACCELERATORS[@]}"; do
    [[ "$known" == "$ACCELERATOR" ]] && return 0
  done
  die "unknown accelerator type '$ACCELERATOR'; known: ${ACCELERATORS[*]}"
}

require_train_config() {
  require_variant
  [[ "$ENGINE" == t5x || "$ENGINE" == builtin ]] || die "--engine must be t5x or builtin, not '$ENGINE'"
  [[ "$ENGINE" == builtin || "$VARIANT" != tiny ]] || die "the t5x engine has no tiny variant (use base|sci|scratch|large)"
  [[ -n "$MODEL_DIR" ]] || die "missing --model-dir gs://BUCKET/PATH (checkpoints must outlive the slice)"
  [[ "$MODEL_DIR" == gs://* ]] || die "--model-dir must be on GCS (gs://...) so a recreated slice can resume, not '$MODEL_DIR'"
  local d
  for d in "$DATA_DIR" "$VOCAB_DIR"; do
    [[ -z "$d" || "$d" == gs://* ]] || die "data and vocabulary folders must be on GCS (gs://...), not '$d'"
  done
  resolve_preset
}

# The runtime image each TPU generation boots (Cloud TPU's documented base images).
default_runtime_version() {
  case "$ACCELERATOR" in
    v5litepod-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    *) echo "tpu-ubuntu2204-base" ;;
  esac
}

# Picks gin/partitioning/<slice>.gin from the accelerator type unless --preset names one.
resolve_preset() {
  if [[ -z "$PRESET" ]]; then
    require_accelerator
    PRESET="${ACCELERATOR/#v5litepod-/v5e-}"
  fi
  [[ "$PRESET" == none || -f "$HERE/../gin/partitioning/$PRESET.gin" ]] || die \
    "no partitioning preset gin/partitioning/$PRESET.gin; pass --preset (one of: $(presets)) or --preset none with --gin NUM_PARTITIONS=..."
}

presets() {
  local f names=()
  for f in "$HERE"/../gin/partitioning/*.gin; do
    [[ -e "$f" ]] && names+=("$(basename "$f" .gin)")
  done
  echo "${names[*]:-none}"
}

# ---------------------------------------------------------------------------------------------
# Running gcloud

show() { printf '%q ' "$@" | sed 's/ $//'; echo; }

# Runs a command, or prints it under --dry-run.
run() {
  if [[ $DRY_RUN -eq 1 ]]; then
    show "$@"
    return 0
  fi
  "$@"
}

error() { echo "tpu.sh: error: $1" >&2; return "${2:-1}"; }

# Runs a creating gcloud call; on failure turns gcloud's error text into a clear message and
# returns 3 for quota/capacity, 2 for configuration, 1 otherwise.
create_call() {
  if [[ $DRY_RUN -eq 1 ]]; then
    show "$@"
    return 0
  fi
  local err rc=0
  err="$(mktemp)"
  "$@" 2>"$err" || rc=$?
  cat "$err" >&2
  if [[ $rc -ne 0 ]]; then
    explain_create_error "$err" || rc=$?
  fi
  rm -f "$err"
  return "$rc"
}

explain_create_error() {
  local err="$1" line
  if line="$(grep -i -m1 'quota' "$err")"; then
    error "not enough TPU quota for $ACCELERATOR in $ZONE (project $PROJECT). Request more at https://console.cloud.google.com/iam-admin/quotas, pick a smaller slice, or use --spot. gcloud said: $line" 3
  elif line="$(grep -i -m1 -E 'no more capacity|stockout|RESOURCE_EXHAUSTED|insufficient capacity' "$err")"; then
    error "no $ACCELERATOR capacity in $ZONE right now; retry later, use --queued, or try another zone. gcloud said: $line" 3
  elif line="$(grep -i -m1 -E 'accelerator.?type' "$err")"; then
    error "accelerator type $ACCELERATOR is not offered in $ZONE (see: gcloud compute tpus accelerator-types list --zone=$ZONE). gcloud said: $line" 2
  elif line="$(grep -i -m1 -E 'project.*(not found|does not exist)|PERMISSION_DENIED|has not been used|is disabled' "$err")"; then
    error "project $PROJECT: not found, no permission, or the TPU API is not enabled. gcloud said: $line" 2
  else
    error "gcloud failed creating $NAME (see its message above)" 1
  fi
}

# Prints the slice state: a gcloud TPU state (READY, PREEMPTED, CREATING, ...), MISSING when it
# does not exist, or UNKNOWN when gcloud could not say. With --queued a suspended or failed
# queued resource reads as FAILED and one still waiting for capacity as WAITING.
slice_state() {
  if [[ $DRY_RUN -eq 1 ]]; then
    [[ $QUEUED -eq 1 ]] && show gcloud compute tpus queued-resources describe "$NAME" "${LOC[@]}" '--format=value(state.state)' >&2
    show gcloud compute tpus tpu-vm describe "$NAME" "${LOC[@]}" '--format=value(state)' >&2
    echo READY
    return 0
  fi
  if [[ $QUEUED -eq 1 ]]; then
    local qstate
    qstate="$(describe_state queued-resources 'value(state.state)')"
    case "$qstate" in
      ACTIVE) ;;
      MISSING|UNKNOWN) echo "$qstate"; return 0 ;;
      ACCEPTED|WAITING_FOR_RESOURCES|PROVISIONING|CREATING) echo WAITING; return 0 ;;
      *) echo FAILED; return 0 ;;  # SUSPENDING, SUSPENDED, FAILED, DELETING
    esac
  fi
  describe_state tpu-vm 'value(state)'
}

describe_state() {
  local kind="$1" format="$2" out err rc=0
  err="$(mktemp)"
  out="$(gcloud compute tpus "$kind" describe "$NAME" "${LOC[@]}" "--format=$format" 2>"$err")" || rc=$?
  if [[ $rc -ne 0 ]]; then
    if grep -q -i -E 'NOT_FOUND|not found' "$err"; then echo MISSING; else cat "$err" >&2; echo UNKNOWN; fi
  else
    echo "${out:-UNKNOWN}"
  fi
  rm -f "$err"
}

# ---------------------------------------------------------------------------------------------
# Commands

cmd_create() {
  require_location
  require_accelerator
  local version="${RUNTIME_VERSION:-$(default_runtime_version)}" spot=()
  [[ $SPOT -eq 1 ]] && spot=(--spot)
  if [[ $QUEUED -eq 1 ]]; then
    create_call gcloud compute tpus queued-resources create "$NAME" "--node-id=$NAME" \
      "${LOC[@]}" "--accelerator-type=$ACCELERATOR" "--runtime-version=$version" "${spot[@]}" || return $?
    wait_ready
  else
    create_call gcloud compute tpus tpu-vm create "$NAME" "${LOC[@]}" \
      "--accelerator-type=$ACCELERATOR" "--version=$version" "${spot[@]}"
  fi
}

# Waits (bounded by --wait-timeout) until the slice is READY; fails if it can never be.
wait_ready() {
  local start=$SECONDS state
  while true; do
    state="$(slice_state)"
    case "$state" in
      READY) return 0 ;;
      FAILED) note "queued resource $NAME is suspended or failed (see: launch/tpu.sh status --queued)"; return 1 ;;
      MISSING|PREEMPTED|TERMINATED|STOPPED) note "slice $NAME is $state"; return 1 ;;
    esac
    if ((SECONDS - start >= WAIT_TIMEOUT)); then
      error "slice $NAME not READY after ${WAIT_TIMEOUT}s (state $state)" || return 1
    fi
    note "slice $NAME is $state; checking again in ${POLL}s"
    sleep "$POLL"
  done
}

cmd_setup() {
  require_location
  local tarball files
  tarball="$(mktemp -d)/$REMOTE_TARBALL"
  # Only what git would commit (tracked + not ignored): never outputs such as prepared notes,
  # runs or exported weights, which .gitignore keeps out.
  files="$(dirname "$tarball")/files"
  git -C "$HERE/.." ls-files -z --cached --others --exclude-standard >"$files" ||
    error "$HERE/.. is not a git checkout; setup ships what git would commit" || return $?
  run tar -czf "$tarball" -C "$HERE/.." --ignore-failed-read --null -T "$files" || return $?
  run gcloud compute tpus tpu-vm scp "$tarball" "$NAME:~/$REMOTE_TARBALL" "${LOC[@]}" \
    --worker=all || return $?
  local remote="set -euo pipefail; rm -rf $REMOTE_SRC; mkdir -p $REMOTE_SRC; tar -xzf \$HOME/$REMOTE_TARBALL -C $REMOTE_SRC; bash $REMOTE_SRC/launch/worker_setup.sh"
  [[ $WITH_T5X -eq 1 ]] && remote+=" --with-t5x"
  run gcloud compute tpus tpu-vm ssh "$NAME" "${LOC[@]}" --worker=all "--command=$remote" \
    || return $?
  rm -rf "$(dirname "$tarball")"
}

# The command each worker runs: launch/worker_train.sh with this run's settings.
remote_train_command() {
  local cmd="cd $REMOTE_SRC &&"
  [[ -n "$DATA_DIR" ]] && cmd+=" CLINICAL_T5X_DATA_DIR=$(printf %q "$DATA_DIR")"
  [[ -n "$VOCAB_DIR" ]] && cmd+=" CLINICAL_T5X_VOCAB_DIR=$(printf %q "$VOCAB_DIR")"
  cmd+=" bash launch/worker_train.sh"
  local arg
  for arg in "$ENGINE" "$VARIANT" "$MODEL_DIR" "$PRESET" "${GIN_BINDINGS[@]}"; do
    cmd+=" $(printf %q "$arg")"
  done
  echo "$cmd"
}

cmd_train() {
  require_location
  require_train_config
  run gcloud compute tpus tpu-vm ssh "$NAME" "${LOC[@]}" --worker=all \
    "--command=$(remote_train_command)"
}

cmd_status() {
  require_location
  [[ $QUEUED -eq 1 ]] && run gcloud compute tpus queued-resources describe "$NAME" "${LOC[@]}"
  run gcloud compute tpus tpu-vm describe "$NAME" "${LOC[@]}" \
    '--format=table(name.basename(),acceleratorType.basename(),state,health)'
}

cmd_logs() {
  require_location
  if [[ -n "$FETCH_DIR" ]]; then
    # Log files carry the worker's host name, so one folder collects every worker's logs.
    umask 077  # the logs may quote training data: owner-only here too
    run mkdir -p "$FETCH_DIR"
    run gcloud compute tpus tpu-vm scp --recurse "$NAME:~/clinical_t5x_logs" "$FETCH_DIR" \
      "${LOC[@]}" --worker=all
  else
    run gcloud compute tpus tpu-vm ssh "$NAME" "${LOC[@]}" --worker=all \
      "--command=tail -n $LINES $REMOTE_LOGS/*.log"
  fi
}

delete_slice() {
  if [[ $QUEUED -eq 1 ]]; then
    run gcloud compute tpus queued-resources delete "$NAME" "${LOC[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" "${LOC[@]}" --quiet
  fi
}

cmd_delete() {
  require_location
  delete_slice
}

# Deletes whatever is left of the slice, creates it again and reinstalls the project.
recreate() {
  local state="$1"
  note "recreating slice $NAME (state $state)"
  if [[ "$state" != MISSING ]]; then
    delete_slice || note "deleting $NAME failed; creating anyway"
  fi
  cmd_create || return $?
  if [[ $QUEUED -eq 0 ]]; then
    wait_ready || return $?
  fi
  cmd_setup
}

# Returns 0 once the slice is READY and set up, recreating it when it is lost.
ensure_slice() {
  local state
  state="$(slice_state)"
  case "$state" in
    READY) return 0 ;;
    CREATING|STARTING|RESTARTING|REPAIRING|WAITING|UNKNOWN)
      wait_ready && return 0
      state="$(slice_state)" ;;
  esac
  recreate "$state"
}

backoff_seconds() {
  local attempt="$1" s="$BACKOFF" i
  for ((i = 1; i < attempt && s < MAX_BACKOFF; i++)); do s=$((s * 2)); done
  echo $((s < MAX_BACKOFF ? s : MAX_BACKOFF))
}

# Train until done; after a dead run, a lost slice or a failed recreate: back off and resume.
cmd_watch() {
  require_location
  require_accelerator
  require_train_config
  [[ "$ENGINE" == t5x ]] && WITH_T5X=1
  local recoveries=0 rc wait_s
  while true; do
    rc=0
    ensure_slice || rc=$?
    if [[ $rc -eq 0 ]]; then
      cmd_train || rc=$?
    fi
    if [[ $DRY_RUN -eq 1 ]]; then
      note "dry run: one round shown; watch repeats it after a preemption or a dead run"
      return 0
    fi
    if [[ $rc -eq 0 ]]; then
      note "training $VARIANT finished (MODEL_DIR $MODEL_DIR) after $recoveries recoveries"
      return 0
    fi
    recoveries=$((recoveries + 1))
    if [[ $recoveries -gt $MAX_RETRIES ]]; then
      die "giving up after $MAX_RETRIES recoveries (--max-retries); last exit status $rc. The same command resumes from MODEL_DIR." 4
    fi
    wait_s="$(backoff_seconds "$recoveries")"
    note "run stopped (exit status $rc); recovery $recoveries of $MAX_RETRIES in ${wait_s}s"
    sleep "$wait_s"
  done
}

main() {
  parse_args "$@"
  case "$COMMAND" in
    create) cmd_create ;;
    setup) cmd_setup ;;
    train) cmd_train ;;
    watch) cmd_watch ;;
    status) cmd_status ;;
    logs) cmd_logs ;;
    delete) cmd_delete ;;
    *) die "unknown command '$COMMAND' (see --help)" ;;
  esac
}

main "$@"
