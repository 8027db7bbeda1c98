"""`daemon_lib.common.run_os_command` for upstream provisioner scripts."""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Any


def run_os_command(command_string: str | list[str], background: bool = False,
                   environment: dict[str, str] | None = None, timeout: float | None = None,
                   shell: bool = False) -> tuple[int, str, str]:
    """Run a command; (returncode, stdout, stderr) as upstream. A string is split like a shell
    would (no shell is used unless shell=True). A timeout or a missing program gives code 255
    (upstream's value) with the reason in stderr; background returns (0, "", "") at once."""
    if shell:
        command: Any = command_string if isinstance(command_string, str) else shlex.join(command_string)
    else:
        command = shlex.split(command_string) if isinstance(command_string, str) else list(command_string)
    env = {**os.environ, **environment} if environment else None
    if background:
        subprocess.Popen(command, env=env, shell=shell, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        return 0, "", ""
    try:
        done = subprocess.run(command, env=env, shell=shell, capture_output=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return 255, "", f"timed out after {timeout} s"
    except OSError as exc:
        return 255, "", str(exc)
    return (done.returncode, done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"))
