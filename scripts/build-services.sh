#!/usr/bin/env bash
# Build the real services that the `local` provider runs, into a cache outside the repo,
# from package registries only.
#
#   scripts/build-services.sh [--marquez-source DIR] [marquez] [lakefs] [collector]
#                                                          (default: all three)
#
# Marquez is built from its source with Maven and the project's own services/marquez/pom.xml.
# The source directory comes from --marquez-source DIR, else $KFM_MARQUEZ_SOURCE, else
# ../shared/third_party/marquez-<version> beside the repository when that exists. Maven reads
# it in place: nothing of it is copied into the repository.
#
# Cache: ${KFM_CACHE_DIR:-$HOME/.cache/kfm-conformance}
#   marquez/<version>/marquez-<version>.jar   Marquez server, one shaded jar (Maven Central)
#   lakefs/v<version>/bin/lakefs              lakeFS server (Go module proxy, wrapper module)
#   collector/v<version>/otelcol-kfm/         OpenTelemetry Collector built with ocb
#   go/mod, go/build, m2                      GOMODCACHE, GOCACHE, Maven local repository
# Each build is keyed on its pinned version plus a hash of its input files under
# services/; a build whose key matches is skipped. Needed Debian packages (PostgreSQL,
# a JDK and Maven for Marquez) are installed with apt-get when missing.
#
# Prints what it did and how long each step took; exits non-zero if any step failed
# (the others still run). Marquez without its source: one line, exit 2, nothing built.
set -euo pipefail

MARQUEZ_VERSION=0.51.1
LAKEFS_VERSION=1.84.0
COLLECTOR_VERSION=0.161.0

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SERVICES="$REPO/services"
CACHE="${KFM_CACHE_DIR:-$HOME/.cache/kfm-conformance}"

export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOFLAGS="-modcacherw"
export CGO_ENABLED=0
# Two lakeFS dependencies (treeverse forks) are not in the checksum database the proxy
# serves; their hashes are pinned in services/lakefs/go.sum instead.
export GONOSUMDB="github.com/treeverse/delta-go,github.com/treeverse/secret-detector"

log() { printf '[build-services] %s\n' "$*" >&2; }
now() { date +%s; }

APT_UPDATED=0
apt_install() {
  local pkgs=("$@") sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
      log "need root (or sudo) to apt-get install ${pkgs[*]}"; return 1
    fi
  fi
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    "${sudo[@]}" apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

input_hash() {  # sha256 over the given files (content and names), first 16 hex chars
  local f
  for f in "$@"; do printf '%s\n' "$(basename "$f")"; cat "$f"; done | sha256sum | cut -c1-16
}

need_go() {
  if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    PATH="$PATH:/usr/local/go/bin"
  fi
  if ! command -v go >/dev/null 2>&1; then
    log "go is not on PATH (lakeFS v$LAKEFS_VERSION needs Go >= 1.26.4; the collector >= 1.24)"
    return 1
  fi
}

# --------------------------------------------------------------------------- marquez
marquez_dir() { printf '%s\n' "$CACHE/marquez/$MARQUEZ_VERSION"; }
marquez_key() { printf '%s\n' "$MARQUEZ_VERSION-$(input_hash "$SERVICES/marquez/pom.xml")"; }
marquez_cached() {
  local dir; dir="$(marquez_dir)"
  [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$(marquez_key)" ] \
    && [ -f "$dir/marquez-$MARQUEZ_VERSION.jar" ]
}

build_marquez() {
  local dir key src="${KFM_MARQUEZ_SOURCE:-}"
  dir="$(marquez_dir)"; key="$(marquez_key)"

  # PostgreSQL server (Debian), a JDK 17 (javac) and Maven.
  if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then apt_install postgresql; fi
  if ! command -v javac >/dev/null 2>&1; then apt_install openjdk-17-jdk-headless; fi
  if ! command -v mvn >/dev/null 2>&1; then apt_install maven; fi

  if marquez_cached; then STATUS=cached; return 0; fi
  # main() checked that the source is there; the version it declares must be the pinned one.
  if ! grep -qx "version=$MARQUEZ_VERSION" "$src/gradle.properties"; then
    log "$src is not the Marquez $MARQUEZ_VERSION source (its gradle.properties says" \
        "$(grep '^version=' "$src/gradle.properties" || echo 'no version')"")"
    return 1
  fi
  # The POM is copied to a build dir in the cache (target/ lands there); the source is read
  # in place through -Dmarquez.source.
  rm -rf "$dir" && mkdir -p "$dir/build" "$CACHE/m2"
  cp "$SERVICES/marquez/pom.xml" "$dir/build/pom.xml"
  if ! mvn -B -Dstyle.color=never -f "$dir/build/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
        -Dmarquez.source="$src" package >"$dir/build/mvn.log" 2>&1; then
    grep -E '^\[(ERROR|FATAL)\]' "$dir/build/mvn.log" | head -n 40 >&2 || true
    log "Maven failed to build Marquez $MARQUEZ_VERSION (full log: $dir/build/mvn.log)"
    return 1
  fi
  mv "$dir/build/target/marquez-$MARQUEZ_VERSION.jar" "$dir/marquez-$MARQUEZ_VERSION.jar"
  rm -rf "$dir/build/target"
  # A smoke test of the jar itself (no database needed).
  if ! java -jar "$dir/marquez-$MARQUEZ_VERSION.jar" --help >/dev/null 2>&1; then
    log "the built Marquez jar does not start (java -jar ... --help failed)"; return 1
  fi
  printf '%s\n' "$key" >"$dir/.stamp"
  STATUS=built
}

# --------------------------------------------------------------------------- lakefs
build_lakefs() {
  need_go
  local dir="$CACHE/lakefs/v$LAKEFS_VERSION" key
  key="$LAKEFS_VERSION-$(input_hash "$SERVICES/lakefs/go.mod" "$SERVICES/lakefs/go.sum")"
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$key" ] && [ -x "$dir/bin/lakefs" ]; then
    STATUS=cached; return 0
  fi
  mkdir -p "$dir/src" "$dir/bin"
  rm -f "$dir/.stamp"
  cp "$SERVICES/lakefs/go.mod" "$SERVICES/lakefs/go.sum" "$dir/src/"
  (
    cd "$dir/src"
    go build -trimpath \
      -ldflags "-s -w -X github.com/treeverse/lakefs/pkg/version.Version=$LAKEFS_VERSION" \
      -o "$dir/bin/lakefs.tmp" github.com/treeverse/lakefs/cmd/lakefs
  )
  "$dir/bin/lakefs.tmp" --version >/dev/null
  mv "$dir/bin/lakefs.tmp" "$dir/bin/lakefs"
  printf '%s\n' "$key" >"$dir/.stamp"
  STATUS=built
}

# --------------------------------------------------------------------------- collector
build_collector() {
  need_go
  local dir="$CACHE/collector/v$COLLECTOR_VERSION" key
  local ocb="$CACHE/collector/tools/builder-v$COLLECTOR_VERSION/builder"
  key="$COLLECTOR_VERSION-$(input_hash "$SERVICES/collector/manifest.yaml")"
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$key" ] \
     && [ -x "$dir/otelcol-kfm/otelcol-kfm" ]; then
    STATUS=cached; return 0
  fi
  if [ ! -x "$ocb" ]; then
    GOBIN="$(dirname "$ocb")" go install "go.opentelemetry.io/collector/cmd/builder@v$COLLECTOR_VERSION"
  fi
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$SERVICES/collector/manifest.yaml" "$dir/manifest.yaml"
  (cd "$dir" && "$ocb" --config manifest.yaml --ldflags="-s -w" >"$dir/ocb.log" 2>&1) || {
    tail -n 25 "$dir/ocb.log" >&2; return 1
  }
  "$dir/otelcol-kfm/otelcol-kfm" --version >/dev/null
  printf '%s\n' "$key" >"$dir/.stamp"
  STATUS=built
}

# --------------------------------------------------------------------------- main
# Each step runs in its own bash process so that `set -e` really applies inside it
# (errexit is ignored in a function or subshell tested by `if` or `||`).
run_one() {  # run_one TARGET STATUS_FILE
  STATUS=failed
  "build_$1"
  printf '%s\n' "$STATUS" >"$2"
}

main() {
  local targets=() t
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --marquez-source) [ "$#" -ge 2 ] || { log "--marquez-source needs a directory"; return 2; }
                        export KFM_MARQUEZ_SOURCE="$2"; shift 2; continue ;;
      --marquez-source=*) export KFM_MARQUEZ_SOURCE="${1#*=}" ;;
      marquez|lakefs|collector) targets+=("$1") ;;
      -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; return 0 ;;
      *) log "unknown argument '$1' (expected marquez, lakefs, collector, --marquez-source DIR)"
         return 2 ;;
    esac
    shift
  done
  if [ "${#targets[@]}" -eq 0 ]; then targets=(marquez lakefs collector); fi

  # Marquez's source: the option, the environment, or the shared copy beside the repository.
  local shared_source="$REPO/../shared/third_party/marquez-$MARQUEZ_VERSION"
  if [ -z "${KFM_MARQUEZ_SOURCE:-}" ] && [ -d "$shared_source" ]; then
    KFM_MARQUEZ_SOURCE="$(cd "$shared_source" && pwd)"
  fi
  export KFM_MARQUEZ_SOURCE="${KFM_MARQUEZ_SOURCE:-}"
  for t in "${targets[@]}"; do
    if [ "$t" = marquez ] && ! marquez_cached \
       && [ ! -f "$KFM_MARQUEZ_SOURCE/api/src/main/java/marquez/MarquezApp.java" ]; then
      log "no Marquez $MARQUEZ_VERSION source${KFM_MARQUEZ_SOURCE:+ at $KFM_MARQUEZ_SOURCE}:" \
          "pass --marquez-source DIR or set KFM_MARQUEZ_SOURCE (see services/README.md)"
      return 2
    fi
  done

  mkdir -p "$CACHE"
  log "cache: $CACHE"

  local failed=0 summary="" start secs status status_file
  status_file="$(mktemp)"
  for t in "${targets[@]}"; do
    start=$(now)
    log "== $t"
    : >"$status_file"
    if "$BASH" "${BASH_SOURCE[0]}" --one "$t" "$status_file"; then
      status="$(cat "$status_file")"
    else
      status=FAILED; failed=1
    fi
    secs=$(( $(now) - start ))
    log "$t: $status in ${secs}s"
    summary+="$(printf '  %-10s %-7s %5ss' "$t" "$status" "$secs")"$'\n'
  done
  rm -f "$status_file"
  printf 'build-services summary (cache %s):\n%s' "$CACHE" "$summary"
  return "$failed"
}

if [ "${1:-}" = "--one" ]; then
  run_one "$2" "$3"
else
  main "$@"
fi
