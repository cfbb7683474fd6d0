"""Smart order routing (router.py) and execution algorithms (algos.py) for the execute stage.

Execute's params carry one routing block (:func:`make_params`, from the config's ``[routing]`` section) and its state
one routing element (:func:`make_state`); execute sends every child order through its own pre-trade gate.
"""
import numpy as np

from stages.records import ALGO_NAMES, BOOK_LEVELS, ORDER_INTENT
from stages.routing import algos, router
from stages.universe import MAX_VENUES

# make_state's tuple, by position
(RS_VENUES, RS_PARENTS, RS_INTENTS, RS_INTS, RS_LEVELS, RS_N_LEVELS, RS_SCORES, RS_ORDER, RS_CHUNKS, RS_ALLOC,
 RS_CHILD) = range(11)


def make_params(*, route_takers: bool, latency_bps_per_ms: float, latency_ewma_alpha: float, health_bps: float,
                health_halflife_ms: float, health_max: float, ack_timeout_ms: float, min_child_usd: float, algo: str,
                algo_above_usd: float, twap_slices: int, twap_horizon_ms: float, pov_share: float,
                pov_max_child_usd: float, pov_horizon_ms: float, iceberg_display_usd: float,
                iceberg_horizon_ms: float) -> np.ndarray:
    """``algo``: a name of records.ALGO_NAMES ("none": only intents that name an algo get one)."""
    codes = {name: code for code, name in ALGO_NAMES.items()}
    if algo not in codes:
        raise ValueError(f"algo={algo!r}: use one of {sorted(codes)}")
    p = np.zeros(algos.N_PARAMS)
    p[router.RP_ACTIVE] = float(route_takers or algo != "none")  # off: a taker intent's own fields decide alone
    p[router.RP_ROUTE_TAKERS] = float(route_takers)
    p[router.RP_LATENCY_BPS_PER_MS], p[router.RP_LATENCY_ALPHA] = latency_bps_per_ms, latency_ewma_alpha
    p[router.RP_HEALTH_BPS], p[router.RP_HEALTH_HALFLIFE_NS] = health_bps, health_halflife_ms * 1e6
    p[router.RP_HEALTH_MAX], p[router.RP_ACK_TIMEOUT_NS] = health_max, ack_timeout_ms * 1e6
    p[router.RP_MIN_CHILD_USD] = min_child_usd
    p[algos.AP_ALGO], p[algos.AP_ALGO_ABOVE_USD] = codes[algo], algo_above_usd
    p[algos.AP_TWAP_SLICES], p[algos.AP_TWAP_HORIZON_NS] = twap_slices, twap_horizon_ms * 1e6
    p[algos.AP_POV_SHARE], p[algos.AP_POV_MAX_CHILD_USD] = pov_share, pov_max_child_usd
    p[algos.AP_POV_HORIZON_NS] = pov_horizon_ms * 1e6
    p[algos.AP_ICEBERG_DISPLAY_USD], p[algos.AP_ICEBERG_HORIZON_NS] = iceberg_display_usd, iceberg_horizon_ms * 1e6
    return p


def make_state():
    """(venue stats [venue, router.VS_*], parents, their intents, counters [algos.RI_*], then the router's scratch:
    levels [venue, level, (price, size)], levels per venue, scores, venue order, chunks, allocation, a child intent)."""
    parents, intents = algos.make_table()
    return (router.make_venue_stats(), parents, intents, np.zeros(algos.N_INTS, np.int64),
            np.zeros((MAX_VENUES, BOOK_LEVELS, 2)), np.full(MAX_VENUES, -1, np.int64), np.zeros(MAX_VENUES),
            np.zeros(MAX_VENUES, np.int64), np.zeros((router.MAX_CHUNKS, 4)), np.zeros((MAX_VENUES, 2)),
            np.zeros(1, ORDER_INTENT))


def counters(routing_state) -> dict[str, int]:
    """The parent table's and the router's counters by name (execute also publishes them: routing_* words)."""
    ints = routing_state[RS_INTS]
    return {name: int(ints[i]) for i, name in enumerate(algos.COUNTER_NAMES)}
