"""Why trading is off: the codes of the control block's kill word (``shm.control.G_KILL_REASON``) and their
names. The control block only latches a code; what each means is the pipeline's.
"""

# 0 = none
(KILL_NONE, KILL_OPERATOR, KILL_STAGE_DIED, KILL_HEARTBEAT_STALE, KILL_SHUTDOWN, KILL_STAGE_FAILED,
 KILL_SWITCH_PRESSED, KILL_SWITCH_SILENT, KILL_SWITCH_LOST, KILL_FEED_STALE, KILL_HARD_DRAWDOWN, KILL_RING_BLOCKED,
 KILL_ERROR_RATE, KILL_CLOCK_BACKWARDS, KILL_CONTROL_CORRUPT, KILL_NOT_ARMED, KILL_SUPERVISOR_DIED,
 KILL_UNGRANTED_ARM, KILL_VENUE_MISMATCH) = range(19)
# KILL_UNGRANTED_ARM: trading_enabled read 1 when the watchdog had not granted an arm (a stray write).
# KILL_VENUE_MISMATCH: a live spot venue's holdings differ from what the run's fills imply (pipeline.venues.holdings).
KILL_REASON_NAMES = {KILL_NONE: "none", KILL_OPERATOR: "operator", KILL_STAGE_DIED: "stage died",
                     KILL_HEARTBEAT_STALE: "heartbeat stale", KILL_SHUTDOWN: "shutdown",
                     KILL_STAGE_FAILED: "stage failed", KILL_SWITCH_PRESSED: "kill switch pressed",
                     KILL_SWITCH_SILENT: "kill switch silent", KILL_SWITCH_LOST: "kill switch lost",
                     KILL_FEED_STALE: "feed stale", KILL_HARD_DRAWDOWN: "hard drawdown",
                     KILL_RING_BLOCKED: "ring blocked", KILL_ERROR_RATE: "error rate",
                     KILL_CLOCK_BACKWARDS: "clock went backwards", KILL_CONTROL_CORRUPT: "control block corrupt",
                     KILL_NOT_ARMED: "not armed", KILL_SUPERVISOR_DIED: "supervisor died",
                     KILL_UNGRANTED_ARM: "arm not granted", KILL_VENUE_MISMATCH: "venue holdings mismatch"}
# The reasons whose kill-stage word (shm.control.G_KILL_STAGE) names the process they are about.
STAGE_REASONS = (KILL_STAGE_DIED, KILL_HEARTBEAT_STALE, KILL_STAGE_FAILED, KILL_RING_BLOCKED, KILL_VENUE_MISMATCH)
