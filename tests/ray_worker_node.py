"""Run a Ray worker node on 127.0.0.1 that joins a loopback head; stops on SIGTERM.

Usage: python ray_worker_node.py GCS_ADDRESS NUM_CPUS TEMP_DIR PORT PORT PORT PORT

Why not ``ray start --address``: keeping Ray on loopback needs
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (PLATFORM.md), and with it ``ray start`` refuses to
add a second node ("Multi-node Ray clusters are not supported"); without it Ray rewrites
127.0.0.1 to the machine's routable address.  So this starts the same raylet the way
``ray start`` does internally (``ray._private.node.Node``), minus that refusal.  The four
ports (dashboard agent HTTP and gRPC, runtime-env agent, metrics export) are passed
explicitly so they never collide with the head's or another Ray user's defaults.
"""
import os
import signal
import sys
import time

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from ray._private.node import Node  # noqa: E402
from ray._private.parameter import RayParams  # noqa: E402


def main(address: str, cpus: str, temp_dir: str, agent_port: str, agent_grpc_port: str, runtime_env_port: str,
         metrics_port: str) -> None:
    params = RayParams(gcs_address=address, node_ip_address="127.0.0.1", num_cpus=int(cpus), temp_dir=temp_dir,
                       include_log_monitor=False, object_store_memory=200 << 20,
                       dashboard_agent_listen_port=int(agent_port), metrics_agent_port=int(agent_grpc_port),
                       runtime_env_agent_port=int(runtime_env_port), metrics_export_port=int(metrics_port))
    Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)   # atexit stops its processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("worker node up", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:])
