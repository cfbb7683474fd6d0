"""The summary of a run that never got going."""
from pipeline.status_view import StatusView
from shm import control as cb


def test_a_run_whose_processes_never_claimed_their_slots_still_gets_a_summary():
    """A start-up that timed out before the feed process got past its imports (a loaded machine) used to end
    in a KeyError on the way out, exit 1 with a traceback instead of exit 4 with its cause."""
    lines = StatusView(cb.ControlBlock.local()).summary()
    assert lines[0] == "events in: 0 (quarantined 0)"
