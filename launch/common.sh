# Shared by launch/tpu.sh and launch/slurm.sh (sourced, not run): the model variants both
# launchers know and the error and option helpers, so their messages and exit codes agree.
# The sourcing script sets PROG (its name in messages) and defines `usage`.

# shellcheck disable=SC2034  # used by the sourcing scripts
readonly VARIANTS=(tiny base sci scratch large)

die() { echo "$PROG: error: $*" >&2; exit "${2:-2}"; }
note() { echo "$PROG: $*" >&2; }

# An option that takes a value must be given one: `need_value "$@"` inside the option loop.
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value"; }

# COMMAND and VARIANT from the positional arguments: `set_command "${positional[@]}"`.
set_command() {
  [[ $# -ge 1 ]] || { usage >&2; exit 2; }
  [[ $# -le 2 ]] || die "too many arguments: $*"
  COMMAND="$1"
  VARIANT="${2:-}"
}

# Each named option variable (NAME for --name) must hold a whole number (0 or more).
require_whole_numbers() {
  local n
  for n in "$@"; do
    [[ "${!n}" =~ ^[0-9]+$ ]] || die "--$(tr '_A-Z' '-a-z' <<<"$n") must be a whole number, not '${!n}'"
  done
}

require_variant() {
  local v
  [[ -n "$VARIANT" ]] || die "$COMMAND needs a VARIANT: one of ${VARIANTS[*]}"
  for v in "${VARIANTS[@]}"; do
    [[ "$v" == "$VARIANT" ]] && return 0
  done
  die "unknown variant '$VARIANT'; one of ${VARIANTS[*]}"
}
