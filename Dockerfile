# One image for the kstep operator, its inline executor, step Jobs and orchestrator pods.
#
#   docker build -t kstep:0.1.0 .
#   docker build --build-arg KSTEP_EXTRAS=data -t kstep:0.1.0-data .   # with numpy and pandas
#
# Any base with python3 (3.11 or newer, with the venv module) and useradd works: Debian and
# Ubuntu images, python:*-slim. Both stages start from the same base, so the virtual
# environment built in the first one finds the same interpreter in the second.
ARG BASE_IMAGE=python:3.11-slim


FROM ${BASE_IMAGE} AS builder

# Optional dependency groups of the kstep distribution, e.g. "data".
ARG KSTEP_EXTRAS=""
# Extra options for pip. A build without a package index mounts a directory of wheels and
# passes "--no-index --find-links /wheels" (see hack/build-image.sh).
ARG PIP_INSTALL_OPTIONS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python3 -m venv /opt/kstep \
 && /opt/kstep/bin/pip install --quiet ${PIP_INSTALL_OPTIONS} --upgrade pip

# .dockerignore lets in only what building the distribution needs.
COPY . /src
RUN /opt/kstep/bin/pip install --quiet ${PIP_INSTALL_OPTIONS} \
        "/src${KSTEP_EXTRAS:+[$KSTEP_EXTRAS]}" \
 && /opt/kstep/bin/kstep-operator --help >/dev/null


FROM ${BASE_IMAGE}

# Numeric, so that Kubernetes can verify runAsNonRoot without a passwd lookup.
ARG KSTEP_UID=10001
RUN groupadd --gid "${KSTEP_UID}" kstep \
 && useradd --uid "${KSTEP_UID}" --gid kstep --home-dir /tmp/kstep \
        --no-create-home --shell /usr/sbin/nologin kstep

COPY --from=builder /opt/kstep /opt/kstep

# The root filesystem may be read-only: everything written goes under /tmp (an emptyDir in
# the Helm chart), and bytecode was compiled when the packages were installed.
ENV PATH=/opt/kstep/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp/kstep \
    TMPDIR=/tmp \
    KSTEP_HOME=/tmp/kstep

USER ${KSTEP_UID}:${KSTEP_UID}
WORKDIR /tmp
CMD ["kstep-operator"]
