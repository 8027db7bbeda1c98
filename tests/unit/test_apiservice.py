"""pvcapid's restart back-off: it grows while pvcapid crash-loops and starts over once it ran fine."""

from pvc.node.apiservice import STABLE_AFTER, restart_delay


def test_a_crash_loop_keeps_its_delay_and_a_stable_run_starts_over() -> None:
    assert restart_delay(8.0, 2.0) == 8.0
    assert restart_delay(30.0, STABLE_AFTER - 0.1) == 30.0
    assert restart_delay(30.0, STABLE_AFTER) == 1.0
    assert restart_delay(16.0, 3600.0) == 1.0
