"""One node of the tests' local Ray cluster, in a process of its own (``tests/_raycluster.py`` starts it):

    python tests/_raynode.py head PORT CPUS TEMP_DIR
    python tests/_raynode.py worker 127.0.0.1:PORT CPUS

Ray's ``ray start`` refuses a second node on the loopback address (it rewrites 127.0.0.1 to the machine's
routable address, and its "local only" switch forbids joining a head). Ray's own multi-node test helper
(``ray.cluster_utils.Cluster``) starts nodes through ``ray._private.node.Node`` instead; this does the same,
one node per process, with every address 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray's own
address lookups give the loopback address). Prints ``READY`` when the node is up; SIGTERM stops it.
"""
import os
import signal
import sys
import time

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # before ray is imported: it reads it once

from ray._private.node import Node  # noqa: E402
from ray._private.parameter import RayParams  # noqa: E402


def main(argv):
    role, where, cpus = argv[0], argv[1], int(argv[2])
    common = dict(node_ip_address="127.0.0.1", num_cpus=cpus, num_gpus=0, object_store_memory=100 * 2**20,
                  min_worker_port=0, max_worker_port=0, include_dashboard=False, dashboard_agent_listen_port=None)
    if role == "head":
        params = RayParams(gcs_server_port=int(where), temp_dir=argv[3], **common)
    else:
        params = RayParams(gcs_address=where, include_log_monitor=False, node_manager_port=0, **common)
    node = Node(params, head=role == "head", shutdown_at_exit=True, spawn_reaper=False)

    def stop(*_):
        node.kill_all_processes(check_alive=False, allow_graceful=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("READY", node.gcs_address, flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1:])
