"""The real-host lane: booted Debian 12 containers (systemd as PID 1) that the Ansible playbook
installs PVC on from the built Debian packages (DESIGN D18).

`python -m pvc.lab.hosts up|down|status|ssh|playbook` drives it; tests/hosts/test_lane.py and
bench/hosts.py run the whole install, the acceptance checks and a rolling upgrade on it.
"""
