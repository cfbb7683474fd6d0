"""The replay clock: a replay's recorded origins are aged against the wall time its pacer scheduled them for."""
import numpy as np

from pipeline.hosting import duty_cycle
from shm import control as cb
from stages import records


def _globals(mode, event0=0, wall0=0, speed=1.0):
    g = np.zeros(cb.GLOBAL_WORDS, np.int64)
    g[cb.G_REPLAY_CLOCK], g[cb.G_REPLAY_EVENT0_NS], g[cb.G_REPLAY_WALL0_NS] = mode, event0, wall0
    g[cb.G_REPLAY_SPEED_PPM] = round(speed * 1e6)
    return g


def test_live_origins_are_wall_time_and_a_paced_replay_maps_them_through_its_speed():
    assert cb.origin_wall_ns(_globals(cb.REPLAY_NONE), 123) == 123
    year_2024, now = 1_723_161_254_000_000_000, 1_780_000_000_000_000_000
    paced = _globals(cb.REPLAY_PACED, year_2024, now, speed=10.0)
    assert cb.origin_wall_ns(paced, year_2024) == now
    assert cb.origin_wall_ns(paced, year_2024 + 10_000_000_000) == now + 1_000_000_000  # 10 s of market in 1 s
    assert cb.origin_wall_ns(_globals(cb.REPLAY_PACED, year_2024, 0), year_2024) == 0  # not started: not aged
    assert cb.origin_wall_ns(_globals(cb.REPLAY_UNPACED, year_2024, now), year_2024) == 0


def test_a_batch_of_a_2024_recording_is_aged_in_microseconds_not_years():
    year_2024, now = 1_723_161_254_000_000_000, 1_780_000_000_000_000_000
    out = np.zeros(4, records.MARKET_EVENT)
    out["origin_ts"] = year_2024 + np.arange(4) * 1_000_000  # 1 ms of market apart
    slot = np.zeros(cb.STAGE_WORDS, np.int64)
    g = _globals(cb.REPLAY_PACED, year_2024, now, speed=1.0)
    done = now + 3_000_000 + 50_000  # 50 us after the last one was due
    duty_cycle.count_batch(slot, g, 0, 0, out, 4, done - 1_000, done)
    hist = slot[cb.S_ORIGIN_HIST:cb.S_ORIGIN_HIST + cb.HIST_BUCKETS]
    assert hist.sum() == 4 and cb.percentile_ns(hist, 1.0) < 4e6
    assert slot[cb.S_LAST_ORIGIN_NS] == 50_000
    unpaced = np.zeros(cb.STAGE_WORDS, np.int64)
    duty_cycle.count_batch(unpaced, _globals(cb.REPLAY_UNPACED, year_2024, now), 0, 0, out, 4, done - 1_000, done)
    assert unpaced[cb.S_ORIGIN_HIST:cb.S_ORIGIN_HIST + cb.HIST_BUCKETS].sum() == 0 and unpaced[cb.S_OUT] == 4
