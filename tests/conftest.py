"""Shared test set-up: a quiet, loopback-only environment and one Ray session for the run.

Other test modules keep their fixtures to themselves; this file only holds what every
module may rely on.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile

import pytest

# Before anything imports Ray or MLflow (PLATFORM.md): no telemetry, Ray on loopback only,
# Ray's session files in a private folder so parallel Ray users on this machine don't clash.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
_RAY_TMP = tempfile.mkdtemp(prefix="rt", dir="/tmp")   # short: Ray's socket paths are length-limited
os.environ["RAY_TMPDIR"] = _RAY_TMP


@pytest.fixture(scope="session")
def ray_session():
    """One local 2-CPU Ray for every in-process test (ray.init costs 5-15 s here)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1", "Ray must stay on loopback"
    yield ray
    ray.shutdown()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_RAY_TMP, ignore_errors=True)
