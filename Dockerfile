# The podpatterns admission webhook image.
#
#   docker build -t podpatterns .                                   (default base below)
#   buildah build --build-arg BASE_IMAGE=localhost/my-base:tag -t podpatterns .
#
# BASE_IMAGE is any Debian-like image whose `python3` is 3.11 or newer and has the venv module
# (official python:*-slim images, or Debian with python3-venv). Both stages start from it, so the
# virtualenv built in the first stage runs unchanged in the second.
ARG BASE_IMAGE=python:3.12-slim-bookworm

# --- build: wheels for podpatterns and every dependency, installed into a virtualenv -------------
FROM ${BASE_IMAGE} AS build
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
SHELL ["/bin/sh", "-eu", "-c"]
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/runtime.txt ./requirements/
COPY webhook ./webhook
# Dependencies are exactly requirements/runtime.txt, each checked against its hashes, and come only as
# published wheels (--only-binary): nothing is compiled, so no compiler is needed in either stage. The
# project's own wheel is pure Python and brings no dependency of its own (--no-deps). pip/setuptools
# are then removed from the venv.
RUN python3 -m venv /opt/podpatterns \
 && /opt/podpatterns/bin/python -m pip install --no-cache-dir --only-binary=:all: --require-hashes -r requirements/runtime.txt \
 && /opt/podpatterns/bin/python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && /opt/podpatterns/bin/python -m pip install --no-cache-dir --no-index --no-deps /wheels/podpatterns-*.whl \
 && /opt/podpatterns/bin/python -m pip check \
 && /opt/podpatterns/bin/python -m pip uninstall --yes pip setuptools
# Two packages carry far more than podpatterns reads; both cuts are checked before the stage ends:
# - kubernetes-validate bundles ~100 MB of schemas, one set per Kubernetes release; webhook/schema.py
#   reads only the newest, so the others go (`catalog list` below validates the built-in entries
#   against it and fails the build if that ever stops being enough);
# - the kubernetes client ships an asyncio copy of itself (kubernetes/aio, ~70 MB) that podpatterns
#   does not use (it uses the synchronous client); the build fails if a module of webhook/ ever
#   names kubernetes.aio, and the synchronous client must still import.
RUN site="$(/opt/podpatterns/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
 && latest="v$(/opt/podpatterns/bin/python -c 'import kubernetes_validate; print(kubernetes_validate.latest_version())')" \
 && find "$site/kubernetes_validate/kubernetes-json-schema" -mindepth 1 -maxdepth 1 -type d \
      ! -name "$latest-local" ! -name "$latest-local-strict" -exec rm -rf {} + \
 && ! grep -rqE 'kubernetes[.]aio|from kubernetes import .*aio' "$site/webhook" \
 && rm -rf "$site/kubernetes/aio" \
 && /opt/podpatterns/bin/python -c 'import kubernetes.client, kubernetes.config, kubernetes.watch' \
 && /opt/podpatterns/bin/podpatterns catalog list > /dev/null

# --- final: the base image plus the virtualenv; no compilers, no pip, non-root --------------------
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="podpatterns" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that injects sidecar, adapter and ambassador containers" \
      org.opencontainers.image.licenses="Apache-2.0"
# The root filesystem is read-only in a cluster: Python writes no bytecode (it was compiled at
# install time), HOME points at /tmp (an emptyDir there), and certificates go below /tmp too.
ENV PATH=/opt/podpatterns/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/podpatterns /opt/podpatterns
# 65532: the same unprivileged uid as the containers the webhook injects; it needs no passwd entry.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8443
# Only what holds for every in-cluster use; the Helm chart appends its flags as container args.
# With nothing appended, development certificates are made in /tmp/podpatterns/certs.
ENTRYPOINT ["podpatterns", "serve", "--host", "0.0.0.0", "--port", "8443", "--certs-dir", "/tmp/podpatterns/certs"]
