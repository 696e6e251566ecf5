# vllm-bootstrap on top of a vLLM image: the control plane in a virtual environment of its
# own, vLLM untouched in the base image's Python (vLLM pins its own FastAPI, pydantic,
# uvicorn...). Build with another vLLM release or flavour:
#   docker build --build-arg VLLM_BASE_IMAGE=vllm/vllm-openai:v0.32.0 -t vllm-bootstrap:cuda12-local .
ARG VLLM_BASE_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${VLLM_BASE_IMAGE}

SHELL ["/bin/sh", "-eu", "-c"]

# tini as PID 1: it forwards SIGTERM to the server and reaps the processes that vLLM's
# children leave behind (Runpod offers no --init).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/vllm-bootstrap/source
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
# The control plane's environment: frozen to uv.lock, no dev dependencies, not editable,
# on the base image's python3 (so its Python matches the image) but apart from its packages;
# with the cluster extra (Ray), so any box can be a head or a worker (docs/CLUSTER.md).
# uv itself lives in a throwaway folder of its own (vLLM's CPU image keeps its Python under
# /opt/uv: nothing of the base image is touched).
ARG UV_VERSION=0.13.9
ENV UV_PROJECT_ENVIRONMENT=/opt/vllm-bootstrap/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
RUN tools="$(mktemp -d)" \
    && python3 -m venv "$tools" \
    && "$tools/bin/python" -m pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}" \
    && "$tools/bin/uv" venv --python "$(command -v python3)" /opt/vllm-bootstrap/venv \
    && "$tools/bin/uv" sync --frozen --no-dev --no-editable --no-cache --extra cluster \
    && rm -rf "$tools" \
    && /opt/vllm-bootstrap/venv/bin/vllm-bootstrap --version \
    && python3 -c "import vllm"

# Everything that should outlive the container lives under one root: mount a volume there
# (Runpod mounts its network volume at /workspace).
ENV VLLM_BOOTSTRAP_HOST=0.0.0.0 \
    VLLM_BOOTSTRAP_PORT=8000 \
    VLLM_BOOTSTRAP_STATE_DIR=/workspace/vllm-bootstrap/state \
    VLLM_BOOTSTRAP_LOG_DIR=/workspace/vllm-bootstrap/logs \
    HF_HOME=/workspace/huggingface \
    VLLM_CACHE_ROOT=/workspace/vllm-cache \
    VLLM_BOOTSTRAP_VLLM_PYTHON=python3

WORKDIR /workspace
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/opt/vllm-bootstrap/venv/bin/python", "-m", "vllm_bootstrap.healthcheck"]
# tini passes SIGTERM on to the server, which stops every launch within
# VLLM_STOP_TIMEOUT_SECONDS and exits.
ENTRYPOINT ["tini", "--", "/opt/vllm-bootstrap/venv/bin/vllm-bootstrap"]
CMD []
