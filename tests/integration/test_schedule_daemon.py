"""The built-in schedule end to end with real daemons: pvcnoded (primary) submits cluster.autobackup at
the next slot of a calendar expression, pvcworkerd runs it (a temp directory target, no tagged VM)
and the ScheduleRecord shows the run.

The expression names a slot every 5 seconds (`*:*:00/5`), so the run comes at the scheduler's
next tick instead of up to a minute later (`minutely` and the other shorthands are parsed by the
same code and checked in tests/unit/test_schedule_calendar.py)."""

from __future__ import annotations

from pathlib import Path

from pvc.cluster import nodes, tasks
from pvc.core import schema
from pvc.core.records import ScheduleRecord
from pvc.core.zk import ZK
from tests.conftest import start_daemon, wait_for

EVERY_5_SECONDS = "*-*-* *:*:00/5"


def test_primary_runs_the_schedule(zk: ZK, daemons, config_factory, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    hosts = zk.hosts.split("/", 1)[0].split(",")
    config = config_factory("hv1", timer={"keepalive_interval": 1},
                            zookeeper={"hosts": hosts, "root": zk.root, "session_timeout": 3},
                            autobackup={"backup_root_path": str(target), "backup_tags": ["backup"],
                                        "backup_schedule": {"full_interval": 7, "full_retention": 2},
                                        "schedule": {"normal": EVERY_5_SECONDS}})
    start_daemon(daemons, "pvc.node.daemon", config)
    start_daemon(daemons, "pvc.worker.daemon", config)
    wait_for(lambda: nodes.primary_node(zk) == "hv1", 30, message="hv1 primary")
    planned = wait_for(lambda: zk.get(schema.schedule("autobackup"), None), 40,
                       message="the schedule planned")
    assert ScheduleRecord.model_validate(planned).next_run is not None

    def ran() -> tasks.TaskRecord | None:
        found = [t for t, _ in tasks.load_tasks(zk) if t.kind == "cluster.autobackup" and t.finished_state]
        return found[0] if found else None

    task = wait_for(ran, 150, message="a scheduled autobackup run")
    assert task.state == "SUCCESS", task.status
    assert task.args["scheduled"] == "normal" and task.target == "primary"
    record = ScheduleRecord.model_validate(zk.get(schema.schedule("autobackup")))
    assert record.last_task == task.id and record.last_kind == "normal"
    assert record.next_run is not None and record.next_run > (record.last_run or 0)
