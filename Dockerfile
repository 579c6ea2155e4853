# The webhook image: the app as a wheel on a slim Python, run as a numeric non-root uid (so the kubelet can
# verify runAsNonRoot without reading /etc/passwd), and nothing written outside /tmp (read-only root).
# Plain Dockerfile syntax only (no parser directive, no RUN --mount): `docker build` with or without
# BuildKit and `buildah bud` build it, fetching nothing but the base image and the Python packages.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY mutator ./mutator
# The app and every dependency as wheels, installed under /install: the final stage copies that tree
# alone, so neither the wheels nor pip's work files end up in a layer of the image.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/nonroot_mutator-*.whl \
    && pip install --no-cache-dir --no-index --find-links=/wheels --ignore-installed --prefix=/install \
        /wheels/*.whl

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TMPDIR=/tmp
COPY --from=build /install /usr/local
# Bytecode is made here, as root, because the read-only root filesystem never lets the server write it.
RUN python -m compileall -q "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && mutator --version
# 65532: the conventional "nonroot" uid of distroless images; no passwd entry is needed for a number.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8443 9090
ENTRYPOINT ["mutator", "serve"]
CMD ["--listen=0.0.0.0:8443", "--tls-cert=/etc/nonroot-mutator/tls/tls.crt", "--tls-key=/etc/nonroot-mutator/tls/tls.key", "--metrics-listen=0.0.0.0:9090"]
