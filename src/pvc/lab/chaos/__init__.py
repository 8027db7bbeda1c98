"""Chaos runs on the lab (issue #17): a seeded workload through the API while seeded faults are
injected, with invariants checked all along and at the end.

    context     the run's clock, event record, API client and probes into the lab's nodes
    workload    the operations (VMs, provisioning, volumes, snapshots, networks) and the ledger
                of what the API accepted, with every accepted request tracked until it ends
    invariants  the sampler (no VM twice, no RBD image written from two nodes) and the final checks
    faults      what can go wrong and how it heals (pvc.lab.chaos.faults)
    report      text and JSON, naming the seed and every operation and fault
    runner      puts them together: `pvc-lab chaos --minutes N --seed S`, bench/chaos.py
"""
