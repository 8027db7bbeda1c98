"""The playbooks parse: every YAML file under deploy/ansible loads, and `ansible-playbook
--syntax-check` accepts each playbook. Seconds, not the lane's half hour: the lane once ran ten
minutes into site.yml before an unquoted colon in a task name stopped it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ANSIBLE = Path(__file__).resolve().parents[2] / "deploy" / "ansible"
PLAYBOOKS = sorted(p.name for p in ANSIBLE.glob("*.yml"))


@pytest.mark.parametrize("path", sorted(ANSIBLE.rglob("*.yml")), ids=lambda p: str(p.relative_to(ANSIBLE)))
def test_every_yaml_file_loads(path: Path) -> None:
    yaml.safe_load(path.read_text())


@pytest.mark.skipif(shutil.which("ansible-playbook") is None,
                    reason="ansible-playbook missing (scripts/install)")
@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_ansible_accepts_the_playbook(playbook: str) -> None:
    command = ["ansible-playbook", "--syntax-check", "-i", "inventory/example", "-e", "node=hv4", playbook]
    result = subprocess.run(command, cwd=ANSIBLE, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
