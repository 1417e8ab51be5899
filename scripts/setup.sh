#!/usr/bin/env bash
# Set up kfm-conformance on a fresh machine: system packages, the Python package with its
# development and reference-pipeline extras, and (with --services) the real services.
#
#   scripts/setup.sh              Debian packages + pip install -e ".[dev]"
#   scripts/setup.sh --services   ... and build Marquez, lakeFS and the Collector
#                                 into ${KFM_CACHE_DIR:-$HOME/.cache/kfm-conformance}
#                                 (Marquez from the source in $KFM_MARQUEZ_SOURCE or
#                                 ../shared/third_party/marquez-<version>), and install
#                                 Airflow 3 there (scripts/setup-airflow.sh)
#
# Idempotent: a second run only checks what is already there.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
WITH_SERVICES=0
for arg in "$@"; do
  case "$arg" in
    --services) WITH_SERVICES=1 ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*" >&2; }

# Debian packages: strace (crash and I/O-error injection), bubblewrap (every pipeline run in
# its own namespaces), PostgreSQL (Marquez's database), Chromium (the HTML report's browser
# check).
missing=()
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "$WITH_SERVICES" -eq 1 ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "apt-get install ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

log "pip install -e .[dev]"
python3 -m pip install -q --disable-pip-version-check -e "$REPO[dev]" 2>&1 \
  | grep -v -e "Running pip as the 'root' user" -e "^$" >&2 || true
python3 -c "import kfm_conformance" # fail loudly if the install did not take

if [ "$WITH_SERVICES" -eq 1 ]; then
  # Marquez builds from its source: $KFM_MARQUEZ_SOURCE, else (build-services.sh looks)
  # ../shared/third_party/marquez-<version> beside the repository. Any failed build, a
  # missing Marquez source included, fails the set-up.
  "$HERE/build-services.sh" lakefs collector marquez
  "$HERE/setup-airflow.sh" >/dev/null # Airflow 3 in its own venv, for the Airflow DAG tests
fi
log "ready: kfm-conformance $(python3 -c 'import kfm_conformance as k; print(k.__version__)')"
