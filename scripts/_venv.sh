# Shared by scripts/setup.sh and scripts/setup_vllm.sh (sourced, not run).

# find_python TAG [MAX_MINOR]: set PY to $PYTHON or the first of python3.11, python3, python; it
# must be Python >= 3.10 (and <= 3.MAX_MINOR when given), else say so (prefixed with TAG) and exit.
find_python() {
  local tag="$1" max="${2:-}" cand upper="" want=">= 3.10"
  if [ -n "$max" ]; then upper=" and sys.version_info < (3, $((max + 1)))"; want="3.10-3.$max"; fi
  PY="${PYTHON:-}"
  if [ -z "$PY" ]; then
    for cand in python3.11 python3 python; do
      if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
    done
  fi
  if [ -z "$PY" ] || ! "$PY" -c "import sys; sys.exit(not (sys.version_info >= (3, 10)$upper))" 2>/dev/null; then
    echo "$tag: needs Python $want (3.11 recommended); set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
}

# venv_stamp SPEC FILE...: the stamp a venv built from FILEs (and this helper) with SPEC carries.
venv_stamp() {
  local spec="$1"; shift
  echo "$(cat "$@" scripts/_venv.sh | sha256sum | cut -c1-16) $spec"
}

# venv_is_current VENV STAMP: whether VENV exists and was built with STAMP.
venv_is_current() {
  [ -x "$1/bin/python" ] && [ "$(cat "$1/.ragkit-stamp" 2>/dev/null)" = "$2" ]
}

# quiet CMD...: run CMD, its output to stderr without pip's "WARNING: Location" lines; never fails
# (callers check the result by importing what they installed).
quiet() { "$@" 2>&1 | grep -v "^WARNING: Location" >&2 || true; }
