#!/usr/bin/env bash
# Build the kstep image with podman, then check it: every console script of the distribution,
# the inline executor and a real pipeline run inside a container with a read-only root
# filesystem, as the image's own non-root user, with all capabilities dropped and no network.
#
# No image registry is needed. The base is a Debian bookworm root filesystem made with
# debootstrap (python3, python3-venv) and imported into podman; pip inside the build installs
# from wheels that the host prepares, so the build runs with no network at all. Both are
# cached outside the repository:
#   ${KSTEP_IMAGE_CACHE:-$HOME/.cache/kstep/image}/{base-*.tar,wheels-*/}
# The last line on stdout is the image name; progress and timings go to stderr.
#
# Usage: hack/build-image.sh [--tag NAME] [--check-only] [--no-check]
#   --tag NAME     the image to build and check (default localhost/kstep:dev)
#   --check-only   check an image built before, without building
#   --no-check     build only
# Environment:
#   KSTEP_BASE_IMAGE   build on this image instead of the debootstrap base (its python3 must be
#                      of the same minor version as PYTHON, which builds the wheels)
#   PYTHON             the host interpreter that builds the wheels (default .venv/bin/python)
#   KSTEP_EXTRAS       optional dependency groups to install in the image, e.g. "data"
#
# Needs: podman, and debootstrap unless KSTEP_BASE_IMAGE is given. Runs as root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${KSTEP_IMAGE_CACHE:-$HOME/.cache/kstep/image}
TAG=localhost/kstep:dev
BUILD=1
CHECK=1
for arg in "$@"; do
  case $arg in
    --tag=*) TAG=${arg#--tag=} ;;
    --tag) echo "build-image: write --tag=NAME" >&2; exit 2 ;;
    --check-only) BUILD=0 ;;
    --no-check) CHECK=0 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

START=$SECONDS
log() { printf '[build-image %4ss] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v podman >/dev/null || die "podman is not installed (Debian: apt-get install podman)"
mkdir -p "$CACHE"

# ------------------------------------------------------------------------ container runtime
# Rootful podman asks for container limits (1048576 open files, 4194304 processes) that a
# process without CAP_SYS_RESOURCE cannot grant, as inside another container; ask for the
# limits this shell has instead. The number of processes is also capped by pid_max, which
# podman applies to itself first.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
pid_max=$(cat /proc/sys/kernel/pid_max)
[ "$nofile" = unlimited ] && nofile=1048576
if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; then nproc=$pid_max; fi
LIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")

# crun refuses hosts with hybrid cgroups (v1 controllers plus a v2 hierarchy); runc runs there.
# Take the first runtime that starts a container from $1.
pick_runtime() {
  local image=$1 runtime errors=""
  for runtime in ${KSTEP_PODMAN_RUNTIME:-crun runc}; do
    command -v "$runtime" >/dev/null || continue
    if out=$(podman --runtime "$runtime" run --rm "${LIMITS[@]}" --network none "$image" \
      /bin/true 2>&1); then
      echo "$runtime"
      return 0
    fi
    errors+=" $runtime: ${out##*$'\n'}"
  done
  die "no container runtime can start a container here:$errors"
}

# ------------------------------------------------------------------------ base image
# Keyed by everything that goes into it, so a change selects a fresh base.
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
base_key=$(printf '%s %s' "$SUITE" "$BASE_PACKAGES" | sha256sum | cut -c1-12)

make_base() {
  local tarball=$CACHE/base-$SUITE-$base_key.tar image=localhost/kstep-base:$SUITE-$base_key
  if podman image exists "$image"; then
    echo "$image"
    return
  fi
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null ||
      die "debootstrap is not installed (Debian: apt-get install debootstrap)"
    # A directory of this process: one left by an interrupted run is removed first.
    local rootfs=$CACHE/rootfs.$$
    rm -rf "$rootfs"
    log "making the base: debootstrap $SUITE with $BASE_PACKAGES (a few minutes, once)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" \
      http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 ||
      die "debootstrap failed; see $CACHE/debootstrap.log"
    # Package caches, documentation and logs only make the image bigger.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
      "$rootfs"/var/log/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
  fi
  log "importing the base $image from $tarball"
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/usr/bin/python3"]' "$tarball" "$image" >/dev/null
  echo "$image"
}

# ------------------------------------------------------------------------ wheels
# Every dependency as a wheel, built by the host's pip (which reaches the package index)
# for the base's Python, plus what building kstep itself needs (setuptools) and pip.
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
EXTRAS=${KSTEP_EXTRAS:-}

make_wheels() {
  local base=$1 base_python host_python key dir
  base_python=$(podman --runtime "$RUNTIME" run --rm "${LIMITS[@]}" --network none "$base" \
    python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  host_python=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$base_python" = "$host_python" ] ||
    die "the base has Python $base_python but $PYTHON is $host_python: set PYTHON to a $base_python"
  key=$( (cat "$ROOT/pyproject.toml"; echo "$EXTRAS $host_python") | sha256sum | cut -c1-12)
  dir=$CACHE/wheels-$key
  if [ ! -f "$dir/.complete" ]; then
    log "building the wheels of every dependency into $dir (once per pyproject.toml)"
    rm -rf "$dir"
    "$PYTHON" -m pip wheel --quiet --wheel-dir "$dir" \
      "$ROOT${EXTRAS:+[$EXTRAS]}" 'setuptools>=69' pip >&2
    # kstep itself is built from source inside the image build.
    rm -f "$dir"/kstep-*.whl
    touch "$dir/.complete"
  fi
  echo "$dir"
}

# ------------------------------------------------------------------------ build
if [ "$BUILD" = 1 ]; then
  if [ -n "${KSTEP_BASE_IMAGE:-}" ]; then
    BASE=$KSTEP_BASE_IMAGE
  else
    BASE=$(make_base)
  fi
  RUNTIME=$(pick_runtime "$BASE")
  log "base image $BASE, container runtime $RUNTIME"
  WHEELS=$(make_wheels "$BASE")

  log "building $TAG"
  build_start=$SECONDS
  previous=$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
  podman --runtime "$RUNTIME" build --quiet "${LIMITS[@]}" --network none \
    --volume "$WHEELS:/wheels:ro" \
    --build-arg "BASE_IMAGE=$BASE" \
    --build-arg "KSTEP_EXTRAS=$EXTRAS" \
    --build-arg "PIP_INSTALL_OPTIONS=--no-index --find-links /wheels" \
    --tag "$TAG" --file "$ROOT/Dockerfile" "$ROOT" >/dev/null
  log "built $TAG in $((SECONDS - build_start)) s ($(podman image inspect --format \
    '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1 / 1e6}'))"
  # The image this tag named before is of no use any more (the builder stage's layers stay,
  # as the next build's cache).
  if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$TAG")" ]
  then
    podman rmi "$previous" >/dev/null 2>&1 || true
  fi
else
  podman image exists "$TAG" || die "there is no image $TAG to check; build it first"
  RUNTIME=$(pick_runtime "$TAG")
fi

# ------------------------------------------------------------------------ check
# As the chart runs it: the image's own user, a read-only root filesystem with only /tmp
# writable, no capabilities, no privilege escalation; and no network, since nothing here
# needs one.
in_container() {
  podman --runtime "$RUNTIME" run --rm "${LIMITS[@]}" --network none \
    --read-only --read-only-tmpfs=false --tmpfs /tmp:rw,mode=1777,size=512m \
    --cap-drop ALL --security-opt no-new-privileges \
    --volume "$ROOT/examples:/examples:ro" "$@"
}

if [ "$CHECK" = 1 ]; then
  check_start=$SECONDS
  log "checking $TAG"

  user=$(in_container "$TAG" python3 -c 'import os; print(os.getuid(), os.getgid())')
  [ "${user%% *}" != 0 ] || die "the image runs as root"
  log "ok: runs as uid/gid $user"

  out=$(in_container "$TAG" sh -c 'touch /opt/kstep/x 2>&1 || echo read-only')
  [ "${out##*$'\n'}" = read-only ] || die "the root filesystem was writable: $out"
  log "ok: the root filesystem is read-only"

  # Every console script of the distribution, read from the installed package's metadata (so
  # one added to pyproject.toml is checked without changing this script): its entry point
  # loads. The command-line tools also answer --help.
  scripts=$(in_container "$TAG" python3 -c '
from importlib.metadata import distribution
points = [e for e in distribution("kstep").entry_points if e.group == "console_scripts"]
for point in points:
    point.load()
print(" ".join(sorted(point.name for point in points)))') || die "a console script does not load"
  log "ok: every console script loads: $scripts"
  for script in kstep kstep-runner kstep-operator kstep-orchestrator; do
    [[ " $scripts " == *" $script "* ]] || die "the image has no $script console script"
  done
  for command in kstep kstep-runner kstep-operator "kstep-operator executor"; do
    # shellcheck disable=SC2086
    in_container "$TAG" $command --help >/dev/null || die "$command --help failed"
    log "ok: $command --help"
  done

  # The orchestrator is configured by its pod's environment; without it, it says what it
  # needs and exits with its cannot-start code (4).
  set +e
  out=$(in_container "$TAG" kstep-orchestrator 2>&1)
  code=$?
  set -e
  [ "$code" = 4 ] && grep -q 'KSTEP_RUN_NAME' <<<"$out" ||
    die "kstep-orchestrator without a run exited with $code: $out"
  log "ok: kstep-orchestrator starts and asks for its run"

  # The inline executor binds its socket under /tmp, then exits once idle.
  in_container "$TAG" kstep-operator executor --socket /tmp/run/executor.sock \
    --idle-exit-seconds 1 >/dev/null 2>&1 || die "the inline executor did not start and stop"
  log "ok: the inline executor serves a socket under /tmp and exits when idle"

  # The default command is the operator: outside a cluster it stops at its Kubernetes login.
  cmd=$(podman image inspect --format '{{json .Config.Cmd}}' "$TAG")
  [ "$cmd" = '["kstep-operator"]' ] || die "the default command is $cmd, not kstep-operator"
  log "ok: the default command is kstep-operator"

  # A real pipeline on the local engine: SQLite and artifacts under KSTEP_HOME in /tmp.
  out=$(in_container --workdir /examples "$TAG" sh -c \
    'kstep run quickstart.py:training -p rows=200 && ls "$KSTEP_HOME"' 2>&1) ||
    die "the quickstart pipeline failed in the container:"$'\n'"$out"
  grep -q 'kstep.db' <<<"$out" || die "the run left no metadata store in KSTEP_HOME:"$'\n'"$out"
  log "ok: kstep run quickstart.py:training completed"

  # A dynamic pipeline with an isolated step: the step-runner in a subprocess of the engine.
  out=$(in_container --workdir /examples "$TAG" \
    kstep run dynamic_tuning.py:tuning -p 'candidates=[0.1, 1.0]' -p size=100 2>&1) ||
    die "the dynamic_tuning pipeline failed in the container:"$'\n'"$out"
  grep -q 'refine.*completed.*isolated' <<<"$out" ||
    die "the isolated step did not complete:"$'\n'"$out"
  log "ok: kstep run dynamic_tuning.py:tuning completed, with its isolated step"
  log "checked $TAG in $((SECONDS - check_start)) s"
fi

echo "$TAG"
