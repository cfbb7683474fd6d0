"""The allocator: which strategies run in which regime, with what weight, and each strategy's own limits.

The seed's switch is the default table: momentum when trending; mean reversion and market making when
range-bound; market making alone when volatile; arbitrage in every regime (its edge is between venues, not
in one market's path). A weight scales the strategy's size (0 = off: it only closes what it holds). Each
strategy has its own position limit per instrument (its own fills, not the account's), an order-rate token
bucket refilled in event time, and a loss limit: a strategy whose marked PnL falls below it is switched off
for the rest of the run (it closes what it holds) and counted.

Per-strategy books (``own``): position and cash per instrument key and strategy, from the fills of its own
orders (every report carries the strategy id of the order).

A running pipeline takes new weights without a restart: the supervisor publishes the configured table in
shared memory (``pipeline.store.weights_store``, one slot of :data:`PUBLISHED_WEIGHTS`), operators and the
auto-tuner publish replacements, and :func:`apply_published` takes the newest at the start of each batch of
predictions. Until a table is applied (a backtest, fused mode: nobody publishes) the params' weights hold.
"""
import numpy as np
from numba import njit

from shm import seqlock
from shm.atomics import load_acquire
from stages.records import (STRAT_ARBITRAGE, STRAT_MARKET_MAKING, STRAT_MEAN_REVERSION,
                            STRAT_MOMENTUM)
from stages.universe import MAX_KEYS

S_MOMENTUM, S_MEAN_REVERSION, S_MARKET_MAKING, S_ARBITRAGE = range(4)
N_STRATEGIES = 4
STRATEGY_IDS = (STRAT_MOMENTUM, STRAT_MEAN_REVERSION, STRAT_MARKET_MAKING, STRAT_ARBITRAGE)  # by S_* index
STRATEGY_KEYS = ("momentum", "mean_reversion", "market_making", "arbitrage")  # config names, by S_* index
N_REGIMES = 3

# params: weights [regime, strategy], then per strategy: position limit (USD per instrument), orders per second,
# burst, loss limit (USD, >= 0)
P_WEIGHTS = 0
P_MAX_POSITION_USD = P_WEIGHTS + N_REGIMES * N_STRATEGIES
P_ORDERS_PER_S = P_MAX_POSITION_USD + N_STRATEGIES
P_BURST = P_ORDERS_PER_S + N_STRATEGIES
P_LOSS_LIMIT_USD = P_BURST + N_STRATEGIES
N_PARAMS = P_LOSS_LIMIT_USD + N_STRATEGIES

PUBLISHED_WEIGHTS = np.dtype([
    ("weights", np.float64, (N_REGIMES, N_STRATEGIES)),  # REGIME_* rows, S_* columns; 0 = off
    ("published_ns", np.int64),                          # wall clock of the publication
])
MAX_WEIGHT = 10.0  # the config's range (allocator.trending ...): a published weight outside it is refused
PUBLISHED_READ_TRIES = 64  # a torn read is retried at the next batch, never waited for

# per strategy: A_TOKENS, A_REFILL_NS (-1: never refilled, the bucket is full), A_DISABLED (1 = loss limit hit)
A_TOKENS, A_REFILL_NS, A_DISABLED = range(3)
# own[key, strategy, O_*]
O_POSITION, O_CASH = range(2)


def make_params(*, weights: np.ndarray, max_position_usd, orders_per_s, burst, loss_limit_usd) -> np.ndarray:
    """``weights[regime, strategy]`` (REGIME_* rows, S_* columns); the rest one value per strategy (S_* order)."""
    p = np.zeros(N_PARAMS)
    p[P_WEIGHTS:P_MAX_POSITION_USD] = np.asarray(weights, float).reshape(N_REGIMES * N_STRATEGIES)
    p[P_MAX_POSITION_USD:P_ORDERS_PER_S] = max_position_usd
    p[P_ORDERS_PER_S:P_BURST] = orders_per_s
    p[P_BURST:P_LOSS_LIMIT_USD] = burst
    p[P_LOSS_LIMIT_USD:N_PARAMS] = loss_limit_usd
    return p


def make_state(published: tuple | None = None):
    """(per-strategy bucket and switch [N_STRATEGIES, 3], own books [MAX_KEYS, N_STRATEGIES, 2], each key's
    latest mid [MAX_KEYS], the applied published weights [N_REGIMES, N_STRATEGIES], [the published sequence
    last seen, the one applied (0: none, the params' weights hold), tables refused], (published seqlock
    sequences, records, read buffer)). ``published`` is a live run's weights table (``pipeline.store.weights_store``); without it, a
    local one nobody publishes to."""
    buckets = np.zeros((N_STRATEGIES, 3))
    buckets[:, A_REFILL_NS] = -1.0  # never refilled: full at the first order
    seqs, records = published if published is not None else seqlock.local_table(PUBLISHED_WEIGHTS, 1)
    return (buckets, np.zeros((MAX_KEYS, N_STRATEGIES, 2)), np.zeros(MAX_KEYS), np.zeros((N_REGIMES, N_STRATEGIES)),
            np.zeros(3, np.int64), (seqs, records, np.zeros(1, PUBLISHED_WEIGHTS)))


@njit(cache=True, _nrt=False)
def usable_weights(weights):
    """Every weight finite and in [0, MAX_WEIGHT] (NaN fails both comparisons)."""
    for r in range(N_REGIMES):
        for s in range(N_STRATEGIES):
            if not (weights[r, s] >= 0.0 and weights[r, s] <= MAX_WEIGHT):
                return False
    return True


@njit(cache=True, _nrt=False)
def apply_published(state):
    """Take a weights table published since the last look; one that is not usable is refused whole and counted
    (the weights in force stay). One acquire load when nothing changed."""
    seqs, records, dst = state[5]
    ints = state[4]
    if load_acquire(seqs, 0) == ints[0]:
        return
    sequence = seqlock.read(seqs, records, 0, dst, 0, PUBLISHED_READ_TRIES)
    if sequence <= 0:
        return
    ints[0] = sequence
    w = dst[0]["weights"]
    if not usable_weights(w):
        ints[2] += 1
        return
    for r in range(N_REGIMES):
        for s in range(N_STRATEGIES):
            state[3][r, s] = w[r, s]
    ints[1] = sequence


@njit(cache=True, _nrt=False)
def weights_version(state):
    """The applied table's version (1 = the supervisor's start-up table; 0 = none, the params' weights)."""
    return state[4][1] // 2


@njit(cache=True, _nrt=False)
def weights_refused(state):
    return state[4][2]


@njit(cache=True, _nrt=False)
def index_of(strategy_id):
    """S_* index of a STRAT_* id, or -1 for an order no allocated strategy sent."""
    if strategy_id == STRAT_MOMENTUM:
        return S_MOMENTUM
    if strategy_id == STRAT_MEAN_REVERSION:
        return S_MEAN_REVERSION
    if strategy_id == STRAT_MARKET_MAKING:
        return S_MARKET_MAKING
    if strategy_id == STRAT_ARBITRAGE:
        return S_ARBITRAGE
    return -1


@njit(cache=True, _nrt=False)
def weight(state, params, regime, s):
    """The weight of strategy ``s`` in ``regime`` (0 once its loss limit was hit)."""
    if state[0][s, A_DISABLED] != 0.0:
        return 0.0
    if state[4][1] > 0:
        return state[3][regime, s]
    return params[P_WEIGHTS + regime * N_STRATEGIES + s]


@njit(cache=True, _nrt=False)
def on_fill(state, s, key, side, qty, price, fee):
    own = state[1]
    own[key, s, O_POSITION] += side * qty
    own[key, s, O_CASH] -= side * qty * price + fee


@njit(cache=True, _nrt=False)
def position(state, s, key):
    return state[1][key, s, O_POSITION]


@njit(cache=True, _nrt=False)
def room(state, params, s, key, side, mid):
    """Base units strategy ``s`` may still add on ``side`` of ``key`` under its own position limit."""
    limit = params[P_MAX_POSITION_USD + s] / mid
    return max(0.0, limit - side * state[1][key, s, O_POSITION])


@njit(cache=True, _nrt=False)
def has_token(state, params, s, now_ns):
    """Refill strategy ``s``'s order-rate bucket to event time ``now_ns``; True when it holds a whole token."""
    b = state[0]
    burst = params[P_BURST + s]
    tokens = b[s, A_TOKENS]
    if b[s, A_REFILL_NS] < 0.0:
        tokens = burst
    else:
        tokens = min(burst, tokens + max(now_ns - b[s, A_REFILL_NS], 0.0) * params[P_ORDERS_PER_S + s] * 1e-9)
    b[s, A_TOKENS] = tokens
    b[s, A_REFILL_NS] = now_ns
    return tokens >= 1.0


@njit(cache=True, _nrt=False)
def spend_tokens(state, params, s, now_ns, n):
    """``n`` intents went out: the bucket may go below zero for the second leg of a pair, never below -burst."""
    b = state[0]
    b[s, A_TOKENS] = max(b[s, A_TOKENS] - n, -params[P_BURST + s])


@njit(cache=True, _nrt=False)
def mark(state, key, mid):
    """The latest mid of ``key``, for marking every strategy's position there."""
    state[2][key] = mid


@njit(cache=True, _nrt=False)
def pnl(state, s):
    """Strategy ``s``'s PnL marked at the latest mids (fees included)."""
    own, mids = state[1], state[2]
    total = 0.0
    for key in range(own.shape[0]):
        if own[key, s, O_POSITION] != 0.0 or own[key, s, O_CASH] != 0.0:
            total += own[key, s, O_CASH] + own[key, s, O_POSITION] * mids[key]
    return total


@njit(cache=True, _nrt=False)
def check_loss(state, params, s):
    """Switch strategy ``s`` off when its PnL is below its loss limit; True when it just happened."""
    limit = params[P_LOSS_LIMIT_USD + s]
    if limit <= 0.0 or state[0][s, A_DISABLED] != 0.0:
        return False
    if pnl(state, s) < -limit:
        state[0][s, A_DISABLED] = 1.0
        return True
    return False

