"""Every process of a run, declared once: its name, its control-block slot, how it is hosted, the module
the launcher runs, and the labels of its counters (slot custom word i is ``counters[i]``).

The supervisor, the launcher, status, the watchdog, the panic conditions and fused mode all read this
table; nothing else numbers processes or labels their counters.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import streams
from shm import control as cb
from stages import execute, feature, feed, risk, strategy, validate

KERNEL = "kernel"   # an njit kernel run by the duty cycle (pipeline.hosting.duty_cycle)
MODEL = "model"     # a Python-side kernel (onnxruntime) hosted around the duty cycle's waits
AGENT = "agent"     # a Python host: do work, report a work count (feed hosts, journal, recorder, watchdog)

# Where the recorder keeps its last error (masked UTF-8) for the run's summary: (first slot word, words).
RECORDER_ERROR_WORDS = (cb.S_CUSTOM + 8, 24)
# Where inference keeps its model's name (UTF-8): (first slot word, words).
MODEL_NAME_WORDS = (cb.S_CUSTOM + 48, 16)
MAX_MEMBERS = 4  # ensemble members with their own counters in inference's slot
MEMBER_COUNTERS = ("calls", "failures", "timeouts", "disabled", "p50_ns", "p99_ns", "max_ns")
# Which model serves the run (model_*, written at load and at every swap), the ensemble's members answering and the
# publications taken or refused (pipeline.store.model_store), the longest a batch waited for the host (apart
# while a model loads or swaps in), the longest load step (a batch may wait that long), then per member m the
# MEMBER_COUNTERS as m<m>_<label>, then the fused members' run's (pipeline.hosting.models.FusedMembers) as
# fused_<label> (failures: batches that fell back to the per-member path; all 0 when the set is not fused), then
# the longest handover of a standby swap (the stage had no process serving).
INFERENCE_COUNTERS = ("model_version", "model_sha256_head", "members", "members_alive", "no_view_batches",
                      "swaps", "publish_refused", "wait_max_ns", "swap_wait_max_ns", "load_step_max_ns") + tuple(
    f"m{m}_{label}" for m in range(MAX_MEMBERS) for label in MEMBER_COUNTERS) + tuple(
    f"fused_{label}" for label in MEMBER_COUNTERS) + ("handover_max_ns",)
SHA256_HEAD_HEX = 15  # model_sha256_head: the first 15 hex digits of the ONNX file's sha256 (60 bits: an int64)
CCXT_FEED_COUNTERS = ("ccxt_resyncs", "ccxt_reconnects", "ccxt_errors", "ccxt_queue_full")
GATEWAY_COUNTERS = ("commands", "answers", "orders_placed", "cancels_sent", "venue_rejects", "unknown_outcomes",
                    "unknown_resolved", "queries", "stream_reconnects", "cancel_alls", "answers_waiting",
                    "venue_errors", "dead_man_refreshes", "reconciled", "ack_p50_us", "ack_max_us", "amends",
                    "amends_applied", "amend_rejects", "holdings_checks", "holdings_mismatches")
# The feed is a kernel only for the synthetic market; a replay or a live venue feeds from an agent (hosting.agent).
GROUP_ENTRY = "pipeline.hosting.group_host"  # hosts a stage group (shared threading) in its first member's place
FEED_ENTRIES = {"synthetic": "pipeline.hosting.stage_host", "replay": "pipeline.sources.replay_feed",
                "ccxt": "pipeline.sources.ccxt_feed"}


@dataclass(frozen=True)
class Process:
    name: str
    slot: int                    # index of its slot in the control block
    host: str                    # KERNEL, MODEL or AGENT
    entry: str                   # module the launcher runs with ``python -m``
    counters: tuple[str, ...]    # labels of its slot's custom words, in word order
    stage: bool = True           # one of the pipeline's stages (feed ... execute)

    def counter(self, label: str) -> int:
        """Index of the custom word labelled ``label``."""
        return self.counters.index(label)


_STAGE_HOST = "pipeline.hosting.stage_host"
PROCESSES = (
    Process("feed", 0, KERNEL, _STAGE_HOST, feed.STATS + CCXT_FEED_COUNTERS),
    Process("validate", 1, KERNEL, _STAGE_HOST, validate.STATS),
    Process("feature", 2, KERNEL, _STAGE_HOST, feature.STATS),
    Process("risk", 3, KERNEL, _STAGE_HOST, risk.STATS),
    # Words 48.. hold the model's name (MODEL_NAME_WORDS).
    Process("inference", 4, MODEL, _STAGE_HOST, INFERENCE_COUNTERS),
    Process("strategy", 5, KERNEL, _STAGE_HOST, strategy.STATS),
    Process("execute", 6, KERNEL, _STAGE_HOST, execute.STATS),
    Process("watchdog", 7, AGENT, "pipeline.safety.watchdog",
            ("checks", "trips", "arms", "arm_refusals", "max_poll_ns"), stage=False),
    # Per stream the records it wrote, then fsyncs; words after the labels hold each stream's first segment.
    Process("journal", 8, AGENT, "pipeline.store.journal_process", (*streams.NAMES, "fsyncs"), stage=False),
    # Per stream the rows it copied, then reconnects; words 8.. hold the last error text.
    Process("recorder", 9, AGENT, "pipeline.store.recorder", (*streams.RECORDED, "reconnects"), stage=False),
    # Only in a run with live venues (gateway.live_venues): their orders between execute and the venues.
    Process("gateway", 10, AGENT, "pipeline.venues.gateway", GATEWAY_COUNTERS, stage=False),
)
BY_NAME = {p.name: p for p in PROCESSES}
NAMES = tuple(p.name for p in PROCESSES)      # control-block slot i belongs to NAMES[i]
STAGE_NAMES = tuple(p.name for p in PROCESSES if p.stage)
assert all(p.slot == i for i, p in enumerate(PROCESSES)), "slots follow declaration order"
assert all(len(p.counters) <= cb.CUSTOM_WORDS for p in PROCESSES), "more counters than a slot has words"
assert len(BY_NAME["recorder"].counters) <= RECORDER_ERROR_WORDS[0] - cb.S_CUSTOM
assert len(BY_NAME["inference"].counters) <= MODEL_NAME_WORDS[0] - cb.S_CUSTOM


def slot(name: str) -> int:
    return BY_NAME[name].slot


def entry(name: str, feed_source: str = "synthetic") -> str:
    """The module that hosts process ``name``; the feed's depends on where its market comes from."""
    return FEED_ENTRIES[feed_source] if name == "feed" else BY_NAME[name].entry


def counters(name: str) -> tuple[str, ...]:
    return BY_NAME[name].counters
