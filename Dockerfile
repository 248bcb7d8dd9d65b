# aptrank in a container: the same install script as `make` and CI (scripts/install.sh).
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends make git libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/aptrank
# Environment first (cached layer): the files the install script hashes, plus the package skeleton.
COPY requirements.txt pyproject.toml README.md ./
COPY scripts/ scripts/
COPY data/ data/
COPY models/ models/
COPY apt/ apt/
COPY pipeline/ pipeline/
COPY serving/ serving/
RUN bash scripts/install.sh
COPY . .

ENV PATH="/opt/aptrank/.venv/bin:${PATH}" \
    PYTHONHASHSEED=0 \
    MLFLOW_TRACKING_URI=""
ENTRYPOINT ["aptrank"]
CMD ["--help"]
