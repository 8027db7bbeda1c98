"""The services the node daemon (`pvc.node.daemon.NodeDaemon`) composes, one per responsibility:

* `nodedoc`: this node's own document, written only by compare-and-set;
* `registration`: the document and session marker at start and on every new session;
* `domainstate`: flush and ready requests, carried out by the subsystems' hooks;
* `keepalive`: the periodic keepalive (figures, VM summary, logs, storage work);
* `primary`: the election and what taking over and handing over mean here;
* `ha`: self-fence, hardware watchdog, heartbeat and the HA monitor (coordinators);
* `storage`: direct-mode OSDs, the libvirt ceph secret, client addresses, Ceph stats (primary);
* `clusterhealth`: the primary's cluster checks (upstream's cluster faults, resolved when they end);
* `networking`: the network reconciler over the host adapters.
* `sriov`: SR-IOV PFs and VFs: set up, published, VF settings applied (networking.sriov_enable).
* `netstats`: per-interface NIC traffic, link speed and state in the node document.
"""
