# The image every hpsearch service shares (docker-compose.yml): Ray head and workers,
# optuna-dashboard and the study runner. CUDA torch comes from the base image; this
# is not the CPU wheel that .ci/test pins for machines without a GPU.
#   docker build -t hpsearch:latest .
ARG BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    HF_HOME=/app/.hf-cache

WORKDIR /app
# Dependencies first (cached), then the package. torch is already in the base image
# and is not a dependency of hpsearch, so pip keeps the CUDA build.
COPY pyproject.toml README.md ./
COPY hpsearch/_version.py hpsearch/_version.py
RUN mkdir -p hpsearch && touch hpsearch/__init__.py \
 && pip install '.[text,postgres,dashboard]' \
 && pip uninstall -y hpsearch
COPY hpsearch/ hpsearch/
COPY studies/ studies/
RUN pip install --no-deps . && python -c "import hpsearch, ray, optuna, psycopg, torch; print(torch.__version__, torch.version.cuda)"

# A non-root user; Ray and the trainers write only under /app and /tmp.
RUN useradd --create-home --uid 1000 hps && chown -R hps /app
USER hps
CMD ["hpsearch", "--help"]
