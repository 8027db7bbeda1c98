"""A failed lab test's report carries what the lab logged while it ran (tests/system/helpers)."""

from __future__ import annotations

from pathlib import Path

from tests.system.helpers import lab_log_marks, lab_log_news


def _write(path: Path, *lines: str) -> None:
    with open(path, "a") as log:
        log.writelines(f"{line}\n" for line in lines)


def test_only_what_was_logged_during_the_test(tmp_path: Path) -> None:
    _write(tmp_path / "hv1-pvcnoded.log", "before the test")
    _write(tmp_path / "hv1-zookeeper.log", "2026 INFO [QuorumPeer] - FOLLOWING")
    _write(tmp_path / "hv1-libvirtd.log", "not a log the report carries")
    marks = lab_log_marks(tmp_path)
    assert set(marks) == {"hv1-pvcnoded.log", "hv1-zookeeper.log"}
    _write(tmp_path / "hv1-pvcnoded.log", "won the primary election", "handing primary over")
    _write(tmp_path / "hv1-zookeeper.log", "2026 INFO [QuorumPeer] - LOOKING", "2026 INFO unrelated",
           "2026 INFO [QuorumPeer] - LEADING")
    sections = dict(lab_log_news(tmp_path, marks))
    assert sections == {
        "lab log hv1-pvcnoded.log: the last 2 of 2 lines of the test":
            "won the primary election\nhanding primary over",
        "lab log hv1-zookeeper.log: changes of role during the test":
            "2026 INFO [QuorumPeer] - LOOKING\n2026 INFO [QuorumPeer] - LEADING",
    }


def test_long_logs_are_cut_to_their_end_and_quiet_ones_left_out(tmp_path: Path) -> None:
    _write(tmp_path / "hv1-pvcnoded.log")
    _write(tmp_path / "hv2-pvcnoded.log", "old")
    marks = lab_log_marks(tmp_path)
    _write(tmp_path / "hv1-pvcnoded.log", *(f"line {i}" for i in range(200)))
    sections = lab_log_news(tmp_path, marks, lines=3)
    assert sections == [("lab log hv1-pvcnoded.log: the last 3 of 200 lines of the test",
                         "line 197\nline 198\nline 199")]


def test_a_log_started_afresh_is_read_whole_and_a_lost_one_named(tmp_path: Path) -> None:
    _write(tmp_path / "hv1-pvcnoded.log", "a long line from before the restart")
    _write(tmp_path / "hv2-pvcnoded.log", "x")
    marks = lab_log_marks(tmp_path)
    (tmp_path / "hv1-pvcnoded.log").write_text("after\n")
    (tmp_path / "hv2-pvcnoded.log").unlink()
    sections = dict(lab_log_news(tmp_path, marks))
    assert sections["lab log hv1-pvcnoded.log: the last 1 of 1 lines of the test"] == "after"
    assert "unreadable" in sections["lab log hv2-pvcnoded.log"]
