#!/usr/bin/env bash
# GPU servers and Slurm clusters for clinical_t5x: submit, status, logs, cancel.
# `submit` writes an sbatch script that starts one JAX process per GPU (or per node) with srun;
# each process joins the job through jax.distributed, which reads Slurm's environment
# (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID). Both trainers
# resume from the newest checkpoint in MODEL_DIR, so surviving preemption and time limits is:
# checkpoint on SIGTERM, requeue, run the same command again.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
readonly HERE ROOT
readonly PROG=slurm.sh
# shellcheck source=launch/common.sh
source "$HERE/common.sh"

usage() {
  cat <<'EOF'
usage: launch/slurm.sh COMMAND [VARIANT] [options]

commands:
  submit VARIANT     write an sbatch script training VARIANT (tiny|base|sci|scratch|large) and
                     submit it; --dry-run prints the script instead
  status             this job name's jobs in the queue (squeue)
  logs               tail the newest job log (--job ID: that job's)
  cancel             cancel this job name's jobs (--job ID: that one); the trainer
                     checkpoints on the SIGTERM Slurm sends first

options (environment fallback in brackets):
  --nodes N            nodes (default 1)
  --gpus-per-node G    GPUs per node (default 8)
  --process-per P      gpu: one JAX process per GPU (default); node: one per node, driving
                       all of its GPUs
  --model-dir D        MODEL_DIR: a folder every node sees, or gs://... [MODEL_DIR]
  --engine E           builtin (python -m clinical_t5x.train, default) or t5x
  --preset P           partitioning preset in gin/partitioning/ (default: the gpu-* preset
                       for this nodes x GPUs layout, smallest GPU memory first; 'none' for
                       the variant's own mesh: data axis over every GPU)
  --data-dir D         prepared shards, local or gs:// [CLINICAL_T5X_DATA_DIR]
  --vocab-dir D        vocabulary folder, local or gs:// [CLINICAL_T5X_VOCAB_DIR]
  --gin NAME=VALUE     extra gin binding for the trainer (repeatable)
  --time T             time limit, [D-]HH:MM:SS (default: the partition's)
  --partition P        Slurm partition
  --account A          Slurm account
  --cpus-per-task C    CPUs per process (the input pipeline runs on them)
  --sbatch-arg ARG     extra #SBATCH line, e.g. --sbatch-arg=--exclusive (repeatable)
  --name N             job name (default clinical-t5x)
  --max-requeues N     requeues after time limits before giving up (default 20)
  --signal-lead S      seconds before the time limit at which to checkpoint (default 300)
  --log-dir D          job logs and scripts, owner-only (default ~/clinical_t5x_logs/slurm)
  --job ID             logs, cancel: one job id
  --lines N            logs: lines to show (default 100)
  --dry-run            submit: print the sbatch script; nothing is written or submitted
  -h, --help           this help

exit status: 0 done, 1 a command failed, 2 bad usage or configuration
EOF
}


# ---------------------------------------------------------------------------------------------
# Options

COMMAND="" VARIANT=""
NODES=1 GPUS_PER_NODE=8 PROCESS_PER=gpu ENGINE=builtin PRESET=""
MODEL_DIR="${MODEL_DIR:-}"
DATA_DIR="${CLINICAL_T5X_DATA_DIR:-}"
VOCAB_DIR="${CLINICAL_T5X_VOCAB_DIR:-}"
GIN_BINDINGS=() SBATCH_ARGS=()
TIME_LIMIT="" PARTITION="" ACCOUNT="" CPUS_PER_TASK=""
NAME=clinical-t5x
MAX_REQUEUES=20 SIGNAL_LEAD=300
LOG_DIR="$HOME/clinical_t5x_logs/slurm"
JOB_ID="" LINES=100 DRY_RUN=0

parse_args() {
  local positional=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --nodes) need_value "$@"; NODES="$2"; shift ;;
      --gpus-per-node) need_value "$@"; GPUS_PER_NODE="$2"; shift ;;
      --process-per) need_value "$@"; PROCESS_PER="$2"; shift ;;
      --model-dir) need_value "$@"; MODEL_DIR="$2"; shift ;;
      --engine) need_value "$@"; ENGINE="$2"; shift ;;
      --preset) need_value "$@"; PRESET="$2"; shift ;;
      --data-dir) need_value "$@"; DATA_DIR="$2"; shift ;;
      --vocab-dir) need_value "$@"; VOCAB_DIR="$2"; shift ;;
      --gin) need_value "$@"; GIN_BINDINGS+=("$2"); shift ;;
      --time) need_value "$@"; TIME_LIMIT="$2"; shift ;;
      --partition) need_value "$@"; PARTITION="$2"; shift ;;
      --account) need_value "$@"; ACCOUNT="$2"; shift ;;
      --cpus-per-task) need_value "$@"; CPUS_PER_TASK="$2"; shift ;;
      --sbatch-arg) need_value "$@"; SBATCH_ARGS+=("$2"); shift ;;
      --sbatch-arg=*) SBATCH_ARGS+=("${1#--sbatch-arg=}") ;;
      --name) need_value "$@"; NAME="$2"; shift ;;
      --max-requeues) need_value "$@"; MAX_REQUEUES="$2"; shift ;;
      --signal-lead) need_value "$@"; SIGNAL_LEAD="$2"; shift ;;
      --log-dir) need_value "$@"; LOG_DIR="$2"; shift ;;
      --job) need_value "$@"; JOB_ID="$2"; shift ;;
      --lines) need_value "$@"; LINES="$2"; shift ;;
      --dry-run) DRY_RUN=1 ;;
      --*) die "unknown option $1 (see --help)" ;;
      *) positional+=("$1") ;;
    esac
    shift
  done
  set_command "${positional[@]}"
  local n
  for n in NODES GPUS_PER_NODE; do
    [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || die "--$(tr '_A-Z' '-a-z' <<<"$n") must be a positive whole number, not '${!n}'"
  done
  require_whole_numbers MAX_REQUEUES SIGNAL_LEAD LINES
  [[ -z "$CPUS_PER_TASK" || "$CPUS_PER_TASK" =~ ^[1-9][0-9]*$ ]] || die "--cpus-per-task must be a positive whole number, not '$CPUS_PER_TASK'"
  [[ -z "$JOB_ID" || "$JOB_ID" =~ ^[0-9]+(_[0-9]+)?$ ]] || die "--job must be a Slurm job id, not '$JOB_ID'"
  [[ "$NAME" =~ ^[A-Za-z0-9._-]+$ ]] || die "--name may hold letters, digits, '.', '_' and '-' only, not '$NAME'"
}

# ---------------------------------------------------------------------------------------------
# Validation

# A local path becomes absolute (every node runs from the checkout, not from here); gs:// stays.
absolute() {
  if [[ "$1" == gs://* ]]; then echo "$1"; else realpath -m -- "$1"; fi
}

require_submit_config() {
  require_variant
  [[ "$ENGINE" == t5x || "$ENGINE" == builtin ]] || die "--engine must be t5x or builtin, not '$ENGINE'"
  [[ "$ENGINE" == builtin || "$VARIANT" != tiny ]] || die "the t5x engine has no tiny variant (use base|sci|scratch|large)"
  [[ "$PROCESS_PER" == gpu || "$PROCESS_PER" == node ]] || die "--process-per must be gpu or node, not '$PROCESS_PER'"
  [[ -n "$MODEL_DIR" ]] || die "missing --model-dir DIR: checkpoints go there and a requeued job resumes from it (a folder every node sees, or gs://BUCKET/PATH)"
  [[ -z "$TIME_LIMIT" || "$TIME_LIMIT" =~ ^([0-9]+-)?[0-9]+:[0-5][0-9]:[0-5][0-9]$ ]] || die "--time must be [D-]HH:MM:SS, not '$TIME_LIMIT'"
  MODEL_DIR="$(absolute "$MODEL_DIR")"
  [[ -z "$DATA_DIR" ]] || DATA_DIR="$(absolute "$DATA_DIR")"
  [[ -z "$VOCAB_DIR" ]] || VOCAB_DIR="$(absolute "$VOCAB_DIR")"
  local d
  for d in "$DATA_DIR" "$VOCAB_DIR"; do
    [[ -z "$d" || "$d" == gs://* || -d "$d" ]] || die "no such folder: $d (data and vocabulary folders must exist on a filesystem every node sees, or be gs://)"
  done
  if [[ "$ENGINE" == t5x && -z "${T5X_ROOT:-}" ]]; then
    python3 -c 'import t5x' 2>/dev/null || die "t5x does not import in this environment; install it as t5x's README says (the job runs in the environment you submit from)"
  fi
  resolve_preset
}

presets() {
  local f names=()
  for f in "$ROOT"/gin/partitioning/*.gin; do
    [[ -e "$f" ]] && names+=("$(basename "$f" .gin)")
  done
  echo "${names[*]:-none}"
}

# The GPU preset for this layout (gpu-8x48g, gpu-4x8x80g, ...), smallest GPU memory first: it
# fits on larger GPUs too. Without one, 'none': the variant's mesh, data axis over every GPU.
resolve_preset() {
  if [[ -z "$PRESET" ]]; then
    local layout="$GPUS_PER_NODE"
    [[ "$NODES" -eq 1 ]] || layout="${NODES}x$GPUS_PER_NODE"
    PRESET="$(find "$ROOT/gin/partitioning" -name "gpu-${layout}x*g.gin" -printf '%f\n' |
      sort -V | head -n 1)"
    PRESET="${PRESET%.gin}"
    if [[ -z "$PRESET" ]]; then
      PRESET=none
      note "no preset for $NODES node(s) x $GPUS_PER_NODE GPUs: the variant's own mesh (data axis over all $((NODES * GPUS_PER_NODE)) GPUs); --preset picks one"
    fi
  fi
  [[ "$PRESET" == none || -f "$ROOT/gin/partitioning/$PRESET.gin" ]] || die \
    "unknown preset '$PRESET' (no gin/partitioning/$PRESET.gin); one of: $(presets), or none"
}

# ---------------------------------------------------------------------------------------------
# The sbatch script

tasks_per_node() {
  if [[ "$PROCESS_PER" == gpu ]]; then echo "$GPUS_PER_NODE"; else echo 1; fi
}

# The trainer command every process runs, shell-quoted: launch/worker_train.sh builds it the
# same way for TPU workers (engine, variant gin, preset, MODEL_DIR, bindings).
trainer_command() {
  local cmd
  # (T5X_ROOT: require_submit_config has checked that t5x imports.)
  cmd="$(CLINICAL_T5X_WORKER_DRY_RUN=1 T5X_ROOT="${T5X_ROOT:-checked}" bash "$HERE/worker_train.sh" \
    "$ENGINE" "$VARIANT" "$MODEL_DIR" "$PRESET" "${GIN_BINDINGS[@]}")"
  cmd="${cmd% }"
  # t5x joins a multi-process job only when asked; jax.distributed then reads Slurm's variables.
  if [[ "$ENGINE" == t5x && $((NODES * $(tasks_per_node))) -gt 1 ]]; then
    cmd+=" --multiprocess_gpu"
  fi
  echo "$cmd"
}

sbatch_header() {
  echo "#!/usr/bin/env bash"
  echo "#SBATCH --job-name=$NAME"
  echo "#SBATCH --nodes=$NODES"
  echo "#SBATCH --ntasks-per-node=$(tasks_per_node)"
  echo "#SBATCH --gpus-per-node=$GPUS_PER_NODE"
  [[ -z "$CPUS_PER_TASK" ]] || echo "#SBATCH --cpus-per-task=$CPUS_PER_TASK"
  [[ -z "$TIME_LIMIT" ]] || echo "#SBATCH --time=$TIME_LIMIT"
  [[ -z "$PARTITION" ]] || echo "#SBATCH --partition=$PARTITION"
  [[ -z "$ACCOUNT" ]] || echo "#SBATCH --account=$ACCOUNT"
  echo "#SBATCH --requeue"
  echo "#SBATCH --signal=B:USR1@$SIGNAL_LEAD"
  echo "#SBATCH --open-mode=append"
  echo "#SBATCH --output=$LOG_DIR/$NAME-%j.log"
  local arg
  for arg in "${SBATCH_ARGS[@]}"; do echo "#SBATCH $arg"; done
}

batch_script() {
  local per="one JAX process per GPU" env_lines=""
  if [[ "$PROCESS_PER" == node ]]; then
    per="one JAX process per node driving its $GPUS_PER_NODE GPUs"
    # jax.distributed would give each process only the GPU numbered SLURM_LOCALID (0).
    env_lines+="export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((GPUS_PER_NODE - 1)))"$'\n'
  fi
  [[ -z "$DATA_DIR" ]] || env_lines+="export CLINICAL_T5X_DATA_DIR=$(printf %q "$DATA_DIR")"$'\n'
  [[ -z "$VOCAB_DIR" ]] || env_lines+="export CLINICAL_T5X_VOCAB_DIR=$(printf %q "$VOCAB_DIR")"$'\n'
  sbatch_header
  cat <<EOF
#
# clinical_t5x $VARIANT ($ENGINE trainer, preset $PRESET) on $NODES node(s) x $GPUS_PER_NODE GPUs,
# $per; written by launch/slurm.sh. Every process resumes from the newest
# checkpoint in MODEL_DIR. Slurm requeues the job after a preemption or a node failure
# (--requeue); $SIGNAL_LEAD s before the time limit the trainer checkpoints and the job requeues
# itself, at most $MAX_REQUEUES times.
set -uo pipefail
umask 077
cd $(printf %q "$ROOT") || exit 2
${env_lines}readonly MAX_REQUEUES=$MAX_REQUEUES
restarts="\${SLURM_RESTART_COUNT:-0}"
echo "=== \$(date -u +%FT%TZ) job \$SLURM_JOB_ID run \$((restarts + 1)) on \$SLURM_JOB_NODELIST"
if ((restarts > MAX_REQUEUES)); then
  echo "slurm job: giving up after \$MAX_REQUEUES requeues; submitting again resumes from MODEL_DIR" >&2
  exit 4
fi

srun_pid="" time_limit=0
# srun passes SIGTERM on to every process: the trainer finishes its step, checkpoints, exits.
stop_trainer() { [[ -z "\$srun_pid" ]] || kill -TERM "\$srun_pid" 2>/dev/null || true; }
trap 'time_limit=1; echo "=== time limit in ${SIGNAL_LEAD} s: checkpointing, then requeueing"; stop_trainer' USR1
trap 'echo "=== preempted or cancelled: checkpointing"; stop_trainer' TERM

srun --kill-on-bad-exit=1 $(trainer_command) &
srun_pid=\$!
rc=0
wait "\$srun_pid" || rc=\$?
while kill -0 "\$srun_pid" 2>/dev/null; do  # a trapped signal interrupted wait
  rc=0
  wait "\$srun_pid" || rc=\$?
done
echo "=== \$(date -u +%FT%TZ) trainer exit status \$rc"
if ((time_limit && rc != 0)); then
  if ((restarts >= MAX_REQUEUES)); then
    echo "slurm job: not requeueing: \$MAX_REQUEUES requeues done; submitting again resumes from MODEL_DIR" >&2
    exit 4
  fi
  scontrol requeue "\$SLURM_JOB_ID"
  exit 0
fi
exit "\$rc"
EOF
}

# ---------------------------------------------------------------------------------------------
# Commands

owner_only_log_dir() {
  mkdir -p "$LOG_DIR"
  chmod 700 "$LOG_DIR"  # job logs come from runs on credentialed notes
}

cmd_submit() {
  require_submit_config
  if [[ $DRY_RUN -eq 1 ]]; then
    batch_script
    note "dry run: nothing written or submitted; without --dry-run: sbatch --parsable $LOG_DIR/$NAME-<time>.sbatch"
    return 0
  fi
  owner_only_log_dir
  local script job
  script="$LOG_DIR/$NAME-$(date -u +%Y%m%dT%H%M%SZ).sbatch"
  (umask 077; batch_script >"$script")
  job="$(sbatch --parsable "$script")" || die "sbatch failed (its message is above); the script is $script" 1
  job="${job%%;*}"
  note "submitted job $job ($VARIANT on $NODES x $GPUS_PER_NODE GPUs, preset $PRESET): log $LOG_DIR/$NAME-$job.log"
  echo "$job"
}

cmd_status() {
  squeue --name="$NAME" --user="${USER:-$(id -un)}" --format='%.12i %.20j %.10T %.12M %.12l %.6D %R'
}

cmd_logs() {
  local log
  if [[ -n "$JOB_ID" ]]; then
    log="$LOG_DIR/$NAME-$JOB_ID.log"
  else
    log="$(find "$LOG_DIR" -maxdepth 1 -name "$NAME-*.log" -printf '%T@ %p\n' 2>/dev/null |
      sort -n | tail -n 1 | cut -d' ' -f2-)"
  fi
  [[ -n "$log" && -f "$log" ]] || die "no job log ${log:-$LOG_DIR/$NAME-*.log} (logs are written once the job starts)" 1
  echo "==> $log" >&2
  tail -n "$LINES" "$log"
}

cmd_cancel() {
  if [[ -n "$JOB_ID" ]]; then
    scancel "$JOB_ID"
  else
    scancel --name="$NAME" --user="${USER:-$(id -un)}"
  fi
}

main() {
  parse_args "$@"
  case "$COMMAND" in
    submit) cmd_submit ;;
    status) cmd_status ;;
    logs) cmd_logs ;;
    cancel) cmd_cancel ;;
    *) die "unknown command '$COMMAND' (see --help)" ;;
  esac
}

main "$@"
