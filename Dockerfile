# aptrank in a container: the same install script as `make` and CI (scripts/install.sh), without the
# dev tools (--no-dev: no pytest, ruff; no compilers, make or git in the image), run as a non-root user.
#
#   docker build -t aptrank .
#   docker run -p 8080:8080 -v /path/to/models:/models aptrank \
#       serve --model /models/model.onnx --features /models/etl --host 0.0.0.0
#
# Inside a container the server must bind 0.0.0.0 (`--host 0.0.0.0`): its default, 127.0.0.1, is
# unreachable through the published port.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/aptrank
# Environment first (cached layer): the files the install script hashes, plus the package skeleton.
COPY requirements.txt pyproject.toml setup.py README.md ./
COPY scripts/ scripts/
COPY aptrank/ aptrank/
COPY data/ data/
COPY models/ models/
COPY apt/ apt/
COPY pipeline/ pipeline/
COPY serving/ serving/
RUN bash scripts/install.sh --no-dev
COPY . .

RUN useradd --create-home --uid 10001 aptrank
USER aptrank
ENV PATH="/opt/aptrank/.venv/bin:${PATH}" \
    PYTHONHASHSEED=0 \
    MLFLOW_TRACKING_URI=""
EXPOSE 8080
# Liveness of `aptrank serve` on its default port (python: the slim image has no curl).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["aptrank"]
CMD ["--help"]
