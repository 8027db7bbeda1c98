"""`python -m pvc.lab.hosts up|down|status|ssh|inventory|playbook|supervise`: the real-host lane."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pvc.lab.hosts import lane
from pvc.lab.proc import LabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pvc.lab.hosts", description=lane.__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="boot the lane's hosts (idempotent)")
    p_up.add_argument("--hosts", type=int, default=3)
    p_up.add_argument("--deb-dir", type=Path, help="built PVC packages: their dependencies go into the image")
    sub.add_parser("down", help="remove every trace of the lane")
    sub.add_parser("status", help="what runs")
    p_ssh = sub.add_parser("ssh", help="a command on a host, as root")
    p_ssh.add_argument("host")
    # not "command": that is the subcommand's dest, which a positional of that name overwrote
    p_ssh.add_argument("remote", nargs=argparse.REMAINDER, metavar="command")
    p_inv = sub.add_parser("inventory", help="write the lane's Ansible inventory; print its path")
    p_inv.add_argument("--deb-dir", type=Path)
    p_play = sub.add_parser("playbook", help="run deploy/ansible/PLAYBOOK against the lane")
    p_play.add_argument("playbook")
    p_play.add_argument("--deb-dir", type=Path)
    p_play.add_argument("--limit")
    p_sup = sub.add_parser("supervise", help=argparse.SUPPRESS)
    p_sup.add_argument("name")
    p_sup.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            extra = []
            if args.deb_dir:
                from pvc.lab.hosts import image

                extra = image.deb_dependencies(sorted(args.deb_dir.glob("*.deb")))
            print(json.dumps(lane.up(args.hosts, extra)))
        elif args.command == "down":
            print("removed:", " ".join(lane.down()) or "nothing")
        elif args.command == "status":
            print(json.dumps(lane.status(), indent=1))
        elif args.command == "ssh":
            remote = args.remote[1:] if args.remote[:1] == ["--"] else args.remote
            os.execvp("ip", lane.ssh_argv(args.host, *remote))
        elif args.command == "inventory":
            print(lane.inventory(args.deb_dir))
        elif args.command == "playbook":
            run = lane.playbook(args.playbook, lane.inventory(args.deb_dir), limit=args.limit)
            print(run.log.read_text()[-4000:])
            print(f"{run.playbook}: rc={run.returncode} changed={run.changed} failed={run.failed} "
                  f"in {run.seconds:.0f}s (log {run.log})")
            return run.returncode
        elif args.command == "supervise":
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            return lane.supervise(args.name, command)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
