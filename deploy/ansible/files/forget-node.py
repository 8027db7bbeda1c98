"""Forget a removed node in PVC's cluster state (remove-node.yml runs this on a coordinator with
PVC's own Python): its node document, log, fencing record, fence information and VM statistics.
Refuses while the node's daemon is still connected."""

import sys

from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.zk import ZK


def main(name: str) -> int:
    settings = load_config()
    auth = settings.zookeeper.auth
    zk = ZK(settings.zookeeper.hosts, settings.zookeeper.root, settings.zookeeper.session_timeout,
            (auth.username, auth.password) if auth else None).start()
    try:
        if zk.exists(schema.node_alive(name)):
            print(f"refused: the node daemon of {name} is still connected; stop pvcnoded there first")
            return 2
        paths = [schema.node(name), schema.node_log(name), schema.node_fencing(name),
                 schema.node_fence_info(name), schema.vm_stats_node(name)]
        gone = [path for path in paths if zk.exists(path)]
        for path in gone:
            zk.delete(path, recursive=True)
        print(f"forgot {name}: {', '.join(gone) or 'nothing left to remove'}")
        return 0
    finally:
        zk.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
