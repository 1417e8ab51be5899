#!/usr/bin/env bash
# Install Apache Airflow 3 into its own virtual environment, for certifying Airflow DAGs.
#
#   scripts/setup-airflow.sh        creates ${KFM_CACHE_DIR:-$HOME/.cache/kfm-conformance}/airflow-venv
#
# apache-airflow 3.3.2, apache-airflow-providers-openlineage 2.20.3 and
# apache-airflow-providers-standard 1.21.0 (plus pyarrow, which the reference DAG's task uses),
# every other package pinned by scripts/airflow-constraints.txt, all from PyPI. Takes about
# 100 s on a fresh machine. Idempotent: a venv that already has these versions is left alone.
# Prints the venv's python on stdout; the tests and the reference DAG's profile find it there
# (or through KFM_AIRFLOW_PYTHON).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${KFM_CACHE_DIR:-$HOME/.cache/kfm-conformance}"
VENV="$CACHE/airflow-venv"
PY="$VENV/bin/python"
PACKAGES=(
  "apache-airflow==3.3.2"
  "apache-airflow-providers-openlineage==2.20.3"
  "apache-airflow-providers-standard==1.21.0"
  "pyarrow"
)

log() { printf '[setup-airflow] %s\n' "$*" >&2; }

installed() {
  [ -x "$PY" ] && "$PY" - <<'EOF' 2>/dev/null
from importlib.metadata import version
want = {
    "apache-airflow": "3.3.2",
    "apache-airflow-providers-openlineage": "2.20.3",
    "apache-airflow-providers-standard": "1.21.0",
}
assert all(version(name) == v for name, v in want.items())
import pyarrow  # noqa: F401
EOF
}

if installed; then
  log "already installed in $VENV"
else
  mkdir -p "$CACHE"
  [ -x "$PY" ] || python3 -m venv "$VENV"
  log "pip install ${PACKAGES[*]} into $VENV (about 100 s)"
  "$PY" -m pip install -q --disable-pip-version-check \
    -c "$HERE/airflow-constraints.txt" "${PACKAGES[@]}" 2>&1 \
    | grep -v -e "Running pip as the 'root' user" -e "^$" >&2 || true
  installed || { log "the Airflow install did not take"; exit 1; }
fi
echo "$PY"
