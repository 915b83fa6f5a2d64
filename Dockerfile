# syntax=docker/dockerfile:1
#
# dbguardian daemon image: `dbguardian run` as a non-root user, with the PostgreSQL client tools
# (pg_dump, pg_restore, pg_dumpall, psql) of every major version in PG_MAJORS.
#
#   docker build -t dbguardian .
#   docker run --init -v ./policy.yaml:/etc/dbguardian/policy.yaml:ro -v dbguardian:/var/lib/dbguardian dbguardian
#   docker run --rm -v ./policy.yaml:/etc/dbguardian/policy.yaml:ro dbguardian check-policy
#
# The policy must set `metrics: {listen: "0.0.0.0:9863"}`: the default 127.0.0.1:9863 answers the
# HEALTHCHECK inside the container but cannot be scraped from outside it. (Without editing the
# policy: -e DBGUARDIAN_METRICS__LISTEN=0.0.0.0:9863, environment overrides win over the file.)
# State and local backups live in the volume /var/lib/dbguardian (state_dir /var/lib/dbguardian,
# local storage path /var/lib/dbguardian/backups). SIGTERM stops gracefully within shutdown_grace
# (default 60s): give `docker stop -t 90` / compose `stop_grace_period: 90s`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# build: a virtualenv in /opt/dbguardian with the hash-pinned dependencies, then dbguardian itself.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/dbguardian
WORKDIR /src
# Dependencies first (their layer stays cached while only the code changes). Every file is
# checked against the hashes in requirements-runtime.lock.
COPY requirements-runtime.lock ./
RUN /opt/dbguardian/bin/pip install --require-hashes -r requirements-runtime.lock
# A C compiler for the one compiled module (dbguardian/pipeline/_dumpscan.c: row counts read off
# pg_dump's stream); the runtime stage gets only the built virtualenv.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md ./
COPY dbguardian ./dbguardian
RUN /opt/dbguardian/bin/pip install --no-deps . \
    && /opt/dbguardian/bin/python -c "from dbguardian.pipeline import dumpcount; assert dumpcount.FAST" \
    && /opt/dbguardian/bin/dbguardian --version

# ---------------------------------------------------------------------------------------------
# pgdg-key: the apt.postgresql.org (PGDG) signing key, taken from Debian's own, Debian-signed
# postgresql-common package (it ships the key for exactly this purpose) instead of a download.
FROM ${PYTHON_IMAGE} AS pgdg-key
WORKDIR /tmp/pgdg
RUN set -eux; \
    apt-get update; \
    apt-get download postgresql-common; \
    dpkg-deb -x postgresql-common_*.deb root; \
    install -D -m 0644 root/usr/share/postgresql-common/pgdg/apt.postgresql.org.gpg \
        /out/apt.postgresql.org.gpg; \
    rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------
# runtime
FROM ${PYTHON_IMAGE}

# PostgreSQL client majors to install from PGDG (Debian bookworm itself only has 15). dbguardian
# uses the client matching the server's major, else the next newer one, never an older one; an
# exact match also keeps pg_restore's SQL within what that server understands. 15-18 are the
# majors supported upstream; 13 and 14 are end-of-life but still common in the field.
# Narrow it for a smaller image: docker build --build-arg PG_MAJORS="16 17" .
ARG PG_MAJORS="13 14 15 16 17 18"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY --from=pgdg-key /out/apt.postgresql.org.gpg /usr/share/keyrings/apt.postgresql.org.gpg
# zstd: for the runbook (`zstd -dc globals.sql.zst | psql`); ca-certificates: TLS to databases
# and object stores, and apt over https.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates; \
    . /etc/os-release; \
    printf '%s\n' \
        'Types: deb' \
        'URIs: https://apt.postgresql.org/pub/repos/apt' \
        "Suites: ${VERSION_CODENAME}-pgdg" \
        'Components: main' \
        'Signed-By: /usr/share/keyrings/apt.postgresql.org.gpg' \
        > /etc/apt/sources.list.d/pgdg.sources; \
    apt-get update; \
    packages=(zstd); \
    for major in ${PG_MAJORS}; do packages+=("postgresql-client-${major}"); done; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"; \
    rm -rf /var/lib/apt/lists/*; \
    for major in ${PG_MAJORS}; do \
        for tool in pg_dump pg_restore pg_dumpall; do "/usr/lib/postgresql/${major}/bin/${tool}" --version; done; \
    done

# A fixed, numeric non-root uid/gid (so Kubernetes' runAsNonRoot can check it). The state
# directory is created here, owned by that user, so a new named volume inherits the ownership.
RUN set -eux; \
    groupadd --system --gid 10001 dbguardian; \
    useradd --system --uid 10001 --gid dbguardian --home-dir /var/lib/dbguardian --no-create-home \
        --shell /usr/sbin/nologin dbguardian; \
    install -d -o dbguardian -g dbguardian -m 0700 /var/lib/dbguardian /var/lib/dbguardian/backups; \
    install -d -m 0755 /etc/dbguardian

COPY --from=build /opt/dbguardian /opt/dbguardian
COPY config/policy.example.yaml /etc/dbguardian/policy.example.yaml

ENV PATH=/opt/dbguardian/bin:$PATH \
    DBGUARDIAN_POLICY=/etc/dbguardian/policy.yaml \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /var/lib/dbguardian
VOLUME ["/var/lib/dbguardian"]
# /metrics (Prometheus), /healthz, /readyz — see the note on metrics.listen above.
EXPOSE 9863

# /healthz answers while the daemon's event loop runs. No curl in the image: Python's urllib
# (urlopen raises on a refused connection, a timeout or a non-2xx answer → exit 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('DBGUARDIAN_HEALTHCHECK_URL', 'http://127.0.0.1:9863/healthz'), timeout=4).close()"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["dbguardian"]
CMD ["run"]
