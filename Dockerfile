# kmemcg-sweep image: one image for the RayJob head and workers, the sharded Indexed Job
# and the MLflow tracking server (so client and server MLflow versions match).
#
# The base is the official Ray image of the exact Ray version pyproject.toml pins
# (ray[default]==2.60.0): the driver, the head and every worker must run the same Ray.
# tests/test_k8s.py checks that the tags below and the pin agree.
#
#   docker build -t kmemcg-sweep:0.1.0 .
#
# Build stage: compile the Cython core into a wheel. The Ray CPU image ships without a C
# compiler, and the runtime image should not carry one.
FROM rayproject/ray:2.60.0-py311 AS build
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py ./
COPY core/ core/
COPY sweep/ sweep/
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM rayproject/ray:2.60.0-py311
ENV MLFLOW_DISABLE_TELEMETRY=true \
    RAY_USAGE_STATS_ENABLED=0 \
    PYTHONDONTWRITEBYTECODE=1
# The image's own unprivileged `ray` user (uid 1000, gid 100), given by number so that a
# pod's `runAsNonRoot: true` can verify it without a passwd lookup.
USER 1000:100
COPY --from=build --chown=1000:100 /wheels/ /tmp/wheels/
# psycopg (3) only for the MLflow server's PostgreSQL backend (k8s/mlflow.yaml): an image-only
# dependency, not one of the package's. It is the driver SQLAlchemy 2.1 loads for a plain
# postgresql:// URL (psycopg2 was 2.0's); the check below loads it the way the server does.
RUN python -m pip install --no-cache-dir /tmp/wheels/*.whl "psycopg[binary]==3.3.9" \
    && rm -rf /tmp/wheels \
    && python -c "import core, sweep.cli, sqlalchemy; core.run_workload; sqlalchemy.create_engine('postgresql://u@h/d')"
# The sweep is run from here: `configs/grid.yaml` and the mixes it names resolve relative to it.
WORKDIR /home/ray/kmemcg-sweep
COPY --chown=1000:100 configs/ configs/
CMD ["python", "-m", "sweep", "configs/grid.yaml"]
