"""Live venues under faults: a `bot4 run --live` against the loopback Binance while the venue misbehaves, the gateway
is killed or stopped, the kill switch trips, or the whole host dies. Real processes, the real ccxt client, real
sockets, no mocks. After each run the journal is held against the venue: every order placed once, the journal's
fills equal the venue's trades, each order's final state equals the venue's, nothing of ours left open."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipeline import kill_reasons, names, registry
from pipeline.safety import postmortem
from pipeline.store.journal import JournalReader
from pipeline.venues import client_ids
from pipeline.venues.gateway import W
from shm import control as cb
from stages import records
from tests.conftest import ROOT, SIGNAL_ARGS
from tools.binance_loopback import LoopbackServer

DATA = Path(__file__).resolve().parents[2] / "data" / "binance-ws-capture"
SPOT = DATA / "spot_btcusdt_20240808.gz"
USDM = DATA / "usdm_btcusdt_20240808.gz"
KEY, SECRET = "faultRunKey3b7e1c05", "faultRunSecret9a4d6f28"


def live_config(tmp_path, server, venue="spot", exchange="binance", gateway="", extra="", stale_ms=2000) -> Path:
    conf = tmp_path / f"{venue}.toml"
    conf.write_text(
        f'[feed]\nsource = "ccxt"\nvenues = ["{venue}"]\nsymbols = ["BTC-USDT"]\n'
        f'ccxt_exchanges = ["{venue}={exchange}"]\nccxt_rest_urls = ["{venue}={server.rest_url}"]\n'
        f'ccxt_ws_urls = ["{venue}={server.ws_url}"]\nccxt_trades = true\n'
        f'[gateway]\nlive_venues = ["{venue}"]\n{gateway}'
        # takes often, small: the point is order flow, not profit
        '[strategy]\nthreshold = 0.02\ntake_usd = 200.0\nquote_usd = 200.0\ncooldown_ms = 200.0\n'
        # ten processes and a loopback venue on two cores shared with other work: a process left unscheduled for
        # half a second, or a market that takes a few seconds to start, is this machine, not the fault under test
        # (the gateway's own staleness is tested below)
        f'[watchdog]\nheartbeat_stale_ms = {stale_ms}\nfeed_stale_ms = 10000\n' + extra)
    return conf


def credentials(monkeypatch, venue="spot"):
    monkeypatch.setenv(f"BOT4_{venue.upper()}_API_KEY", KEY)
    monkeypatch.setenv(f"BOT4_{venue.upper()}_API_SECRET", SECRET)


class Output:
    """The run's output, read by a thread as it comes (the test does other things meanwhile, and a full pipe would
    hold the supervisor)."""

    def __init__(self, run, log: Path):
        self.run, self.lines, self._cond = run, [], threading.Condition()
        self.log = log.open("w")  # kept in the test's directory: what a failed run said
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.run.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self.log.write(line)
                self.log.flush()
                self._cond.notify_all()
        self.log.close()
        with self._cond:
            self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def wait_for(self, pattern, timeout=180.0, start=0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.lines)}")
                self._cond.wait(min(left, 0.2))

    def finish(self, timeout=120.0) -> tuple[int, str]:
        code = self.run.proc.wait(timeout)
        self._thread.join(10)
        return code, self.text


def until(predicate, timeout, what, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for: {what() if callable(what) else what}"
        time.sleep(step)


def ours(snapshot, prefix):
    orders = [o for o in snapshot["orders"] if o["clientOrderId"].startswith(prefix)]
    trades = [t for t in snapshot["trades"] if t["clientOrderId"].startswith(prefix)]
    return orders, trades


def exec_reports(journal: Path) -> np.ndarray:
    return JournalReader(str(journal), "exec", records.EXEC_REPORT).read_all()


def journal_fills(reports) -> list:
    state = reports["state"]
    fills = reports[((state == records.ORD_PARTIAL) | (state == records.ORD_FILLED)) & (reports["qty"] > 0)]
    return sorted((int(f["order_id"]), round(float(f["price"]), 8), round(float(f["qty"]), 8)) for f in fills)


def venue_fills(trades, prefix) -> list:
    return sorted((client_ids.order_id(prefix, t["clientOrderId"]), round(float(t["price"]), 8),
                   round(float(t["qty"]), 8)) for t in trades)


VENUE_END = {"FILLED": "filled", "CANCELED": "cancelled", "EXPIRED": "cancelled"}
JOURNAL_END = {records.ORD_FILLED: "filled", records.ORD_CANCELLED: "cancelled", records.ORD_REJECTED: "rejected"}


def final_states(reports) -> dict:
    """Each order's end in the journal: the state of its last report that ends it (filled, cancelled or rejected;
    a late fill, reported partially filled, ends nothing)."""
    out = {}
    for r in reports:
        end = JOURNAL_END.get(int(r["state"]))
        if end is not None:
            out[int(r["order_id"])] = end
    return out


def check_journal_against_venue(journal: Path, snapshot: dict, prefix: str, output: str) -> dict:
    """Every order placed once; the journal's fills equal the venue's trades; every order's end in the journal is
    the venue's; nothing of ours open at the venue. Returns figures for the test's own assertions."""
    orders, trades = ours(snapshot, prefix)
    cids = Counter(o["clientOrderId"] for o in orders)
    assert not [c for c, k in cids.items() if k > 1], f"a client order id placed twice: {cids.most_common(3)}"
    by_order = Counter(client_ids.order_id(prefix, o["clientOrderId"]) for o in orders)
    assert None not in by_order and max(by_order.values(), default=1) == 1, by_order.most_common(3)
    reports = exec_reports(journal)
    got, want = journal_fills(reports), venue_fills(trades, prefix)
    assert got == want, (f"journal fills {len(got)} != venue trades {len(want)}\nonly in the journal: "
                         f"{sorted(set(got) - set(want))[:10]}\nonly at the venue: {sorted(set(want) - set(got))[:10]}"
                         f"\n{output[-6000:]}")
    ends = final_states(reports)
    wrong = []
    for o in orders:
        oid = client_ids.order_id(prefix, o["clientOrderId"])
        venue_end = VENUE_END.get(o["status"], o["status"])
        if ends.get(oid) != venue_end:
            wrong.append((oid, o["status"], ends.get(oid)))
    # an order the journal says rejected never reached the venue (or the venue refused it): none placed
    placed = set(by_order)
    rejected_placed = [oid for oid, end in ends.items() if end == "rejected" and oid in placed]
    assert not wrong and not rejected_placed, f"final states differ (id, venue, journal): {wrong[:10]} " \
                                              f"rejected yet at the venue: {rejected_placed[:10]}\n{output[-6000:]}"
    assert not [o for o in snapshot["open_orders"] if o["clientOrderId"].startswith(prefix)], "ours left open"
    unsettled = sorted(set(int(i) for i in reports["order_id"] if i) - set(ends))  # every order's outcome journalled
    assert not unsettled, f"orders without an end in the journal: {unsettled[:10]}\n{output[-6000:]}"
    return dict(orders=len(orders), fills=len(got), ends=Counter(ends.values()), reports=reports)


def gateway_summary(output: str) -> dict:
    """The gateway's figures from the run's last gateway line (the summary)."""
    line = re.findall(r"gateway \(live venues\):.*", output)[-1]
    numbers = {k: int(v.replace(",", "")) for k, v in re.findall(
        r"(commands|answers|placed|cancels|venue rejects|unknown outcomes|resolved|queries|stream reconnects|"
        r"cancel-alls|errors) ([\d,]+)", line)}
    return numbers


class Block:
    """The run's control block, attached: the gateway's counters and the trading flag, read live."""

    def __init__(self, run_name: str):
        self.block = cb.ControlBlock.attach(names.control(run_name))
        self.g = self.block.globals
        self.gateway = self.block.stages[registry.slot("gateway")]

    def gw(self, word: str) -> int:
        return int(self.gateway[cb.S_CUSTOM + W[word]])

    def close(self):
        self.block.close()


def cli(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def open_ours(server, prefix) -> list:
    return [o for o in server.account_snapshot()["open_orders"] if o["clientOrderId"].startswith(prefix)]


def test_venue_faults_during_a_live_run_lose_nothing_duplicate_nothing_and_the_kill_switch_reaches_the_venue(
        live, tmp_path, monkeypatch):
    """Faults one after the other while the run trades, each once the previous one's outcome is settled, each met
    by a create: a 429 with Retry-After, a 503, a venue refusal, a fill on the user stream before its NEW and before
    the REST answer, and the user stream dropped (refused for longer than the recvWindow) while a create is answered
    after the client's timeout. Then the operator trips the kill switch: every open order of ours at the
    venue is cancelled within moments. After the stop the journal is held against the venue."""
    credentials(monkeypatch)
    journal = tmp_path / "journal"
    with LoopbackServer([SPOT], "spot", speed=3, wait_streams=2,
                        orders=dict(api_key=KEY, secret=SECRET, balances={"USDT": 1_000_000.0, "BTC": 10.0})) as server:
        # the client gives up on a request after 1 s (the slow fault answers after 1.6 s), and so does the venue
        # (the recvWindow): an order not found 1.5 s after its create failed was never placed
        conf = live_config(tmp_path, server, gateway="request_timeout_ms = 1000\nquery_interval_ms = 500\n"
                                                      "in_flight_query_ms = 1000\n")
        # stopped by the test once it is done (SIGTERM); the duration only bounds a run the test lost control of
        run = live("--live", "--config", str(conf), *SIGNAL_ARGS, "--duration", "120", "--journal", str(journal))
        out = Output(run, tmp_path / "run.log")
        out.wait_for(r"bot4: running", timeout=280)  # (the first run after an edit compiles the kernels)
        prefix = client_ids.prefix(run.name)
        block = Block(run.name)
        routes = server.order_routes
        try:
            until(lambda: block.gw("orders_placed") >= 1, 60, "the first order placed")
            steps = []

            def fault(kind, settled, what, seconds=0.0, timeout=8.0):
                t0 = time.monotonic()
                # 429, 503, slow: met by the next create (a quote's cancel or a query passes meanwhile)
                server.inject(kind, times=1, seconds=seconds, placements_only=kind in ("429", "503", "slow"))
                until(settled, timeout, lambda: f"{what}:\n{out.text[-4000:]}")
                steps.append((kind, round(time.monotonic() - t0, 2)))

            # a create refused with 429 (Retry-After 1 s), then one with 503: each unknown until a query past the
            # create's recvWindow finds no such order
            fault("429", lambda: block.gw("unknown_outcomes") >= 1 and block.gw("unknown_resolved") >= 1,
                  "the 429's create settled", seconds=1.0)
            fault("503", lambda: block.gw("unknown_outcomes") >= 2 and block.gw("unknown_resolved") >= 2,
                  "the 503's create settled")
            rejects = block.gw("venue_rejects")
            fault("reject_next", lambda: routes.counts["rejected"] == 1 and block.gw("venue_rejects") > rejects,
                  "the venue's refusal answered")
            fault("ack_after_fill", lambda: routes.counts["acks_after_fill"] == 1, "an order filled on placement",
                  seconds=0.3, timeout=20.0)
            # the user stream dropped (and refused for 2 s), and meanwhile a create answered after the client gave up
            # on it: nothing tells the gateway it was placed but a query by its client order id
            server.inject("drop_user_stream", seconds=2.0)
            fault("slow", lambda: block.gw("unknown_outcomes") >= 3 and block.gw("unknown_resolved") >= 3,
                  "the slow create settled", seconds=1.6)
            until(lambda: block.gw("stream_reconnects") == 1 and "user stream back" in out.text, 10,
                  lambda: f"the user stream back:\n{out.text[-4000:]}")
            print(f"faults (kind, seconds to settle): {steps}")
            # the kill switch, while quotes rest at the venue
            until(lambda: open_ours(server, prefix), 5, "a resting order of ours at the venue")
            tripped = cli("killswitch", "trip", "--name", run.name, "--reason", "test")
            assert tripped.returncode == 0 and "tripped" in tripped.stdout, tripped.stdout + tripped.stderr
            until(lambda: not open_ours(server, prefix), 5, "every order of ours cancelled at the venue", step=0.01)
            assert block.g[cb.G_KILL_REASON] == kill_reasons.KILL_OPERATOR
            killed_ms = int(block.g[cb.G_KILL_TIME_NS]) / 1e6
        finally:
            block.close()
        # the venue's own times of the cancels (its clock runs skew_ms ahead of this host's): the trip -> each order
        # that was open cancelled
        cancelled = sorted(o["updateTime"] - server.skew_ms - killed_ms for o in ours(server.account_snapshot(),
                                                                                     prefix)[0]
                           if o["status"] == "CANCELED" and o["updateTime"] - server.skew_ms >= killed_ms - 1)
        assert cancelled, "no order of ours was cancelled by the trip"
        print(f"kill switch tripped -> {len(cancelled)} open orders of ours cancelled at the loopback venue "
              f"{cancelled[0]:.0f} to {cancelled[-1]:.0f} ms after (the venue's clock, ms resolution)")
        assert cancelled[-1] < 2000
        time.sleep(0.5)  # what the trip's cancels bring back reaches the journal
        run.proc.send_signal(signal.SIGTERM)
        code, output = out.finish(timeout=180)
        snapshot = server.account_snapshot()
    print("\n".join(line for line in output.splitlines() if line.startswith(("gateway:", "bot4:"))))
    assert code == 5 and "trading was disabled during the run: operator" in output, output  # ExitCode.TRIPPED
    assert KEY not in output and SECRET not in output
    figures = check_journal_against_venue(journal, snapshot, prefix, output)
    assert figures["fills"] > 0 and figures["ends"]["cancelled"] > 0, figures
    gw = gateway_summary(output)
    # 429, 503 and the slow create: three creates of unknown outcome, each settled (two never placed, one found
    # placed), none left in doubt at the stop ("resolved" counts creates; a cancel in doubt ends as its order does)
    assert gw["unknown outcomes"] >= 3 and gw["resolved"] >= 3 and "orders in doubt" not in output, gw
    assert gw["stream reconnects"] == 1 and gw["cancel-alls"] >= 1, gw
    # placed: the orders the venue took; venue rejects: the refusal and the two creates never placed (and any create
    # this loaded machine delivered past its recvWindow), not the flatten's dust the gateway refuses itself
    late = len(re.findall(r"rejected: .*-1021", output))
    assert gw["placed"] == figures["orders"] and gw["venue rejects"] == 3 + late, gw
    for text in ("429 Too Many Requests", "503 Service Unavailable", "RequestTimeout", "PRICE_FILTER",
                 "never placed: not found by a query past the create's recvWindow", "user stream back"):
        assert text in output, text


def test_a_killed_gateway_restarts_and_reconciles_and_a_stopped_one_trips_trading_and_nothing_is_lost(
        live, tmp_path, monkeypatch):
    """SIGKILL of the gateway with a create in doubt and orders resting at the venue, one of which fills while no
    gateway runs, with run.restart: trading off at once (the supervisor says the gateway died), the gateway back, its
    start-up reconciliation cancelling what its previous incarnation left open, the fill made meanwhile and the
    create that never reached the venue settled. Armed again, the gateway is stopped (SIGSTOP) past the heartbeat
    limit: trading off, the reason naming it; continued (SIGCONT), it cancels what is open. After the stop the
    journal equals the venue."""
    credentials(monkeypatch)
    journal = tmp_path / "journal"
    gateway_slot = registry.slot("gateway")
    with LoopbackServer([SPOT], "spot", speed=3, wait_streams=2,
                        orders=dict(api_key=KEY, secret=SECRET, balances={"USDT": 1_000_000.0, "BTC": 10.0})) as server:
        conf = live_config(tmp_path, server, extra='[run]\nrestart = "restart"\nmax_restarts = 2\n', stale_ms=1000)
        run = live("--live", "--config", str(conf), *SIGNAL_ARGS, "--duration", "120", "--journal", str(journal))
        out = Output(run, tmp_path / "run.log")
        out.wait_for(r"bot4: running", timeout=280)  # (the first run after an edit compiles the kernels)
        prefix = client_ids.prefix(run.name)
        block = Block(run.name)
        g = block.g
        try:
            until(lambda: block.gw("orders_placed") >= 3 and open_ours(server, prefix), 60,
                  "orders placed, some resting at the venue")
            # killed with a create in doubt (answered 503: the venue never took it, the gateway does not know yet)
            server.inject("503", placements_only=True)
            until(lambda: block.gw("unknown_outcomes") >= 1, 10, "a create in doubt")
            old = int(block.gateway[cb.S_PID])
            os.kill(old, signal.SIGKILL)
            out.wait_for(rf"stage gateway \(pid {old}\) died \(signal SIGKILL\); trading disabled", timeout=10)
            assert not g[cb.G_TRADING_ENABLED]
            assert (int(g[cb.G_KILL_REASON]), int(g[cb.G_KILL_STAGE])) == (kill_reasons.KILL_STAGE_DIED, gateway_slot)
            left = open_ours(server, prefix)  # nobody cancels them while it is dead
            assert left, "no resting order of ours when the gateway died"
            # and one of them fills meanwhile: nobody hears of it but the next incarnation
            filled = left[0]
            server.trade(filled["symbol"], float(filled["price"]), float(filled["qty"]) * 2)
            out.wait_for(r"bot4: restarted gateway \(restart 1 of 2\)", timeout=10)
            until(lambda: block.gateway[cb.S_STATE] == cb.RUNNING and int(block.gateway[cb.S_PID]) != old, 60,
                  lambda: f"the gateway running again:\n{out.text[-3000:]}")
            until(lambda: not open_ours(server, prefix), 10, "what the dead gateway left open cancelled")
            if len(left) > 1:
                out.wait_for(r"gateway: spot: start-up reconciliation: cancel ", timeout=1)
            assert not g[cb.G_TRADING_ENABLED]  # a restart does not arm
            until(lambda: cli("killswitch", "arm", "--name", run.name).returncode == 0, 30,
                  lambda: f"armed again:\n{out.text[-3000:]}", step=0.3)
            placed = block.gw("orders_placed")
            until(lambda: block.gw("orders_placed") >= placed + 3, 30, "trading again")
            # stopped past the heartbeat limit (1 s): the watchdog trips, naming the gateway
            pid = int(block.gateway[cb.S_PID])
            trips = g[cb.G_TRIPS]
            os.kill(pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:  # whole once counted: cb.trip drops the flag first and counts the trip last
                until(lambda: not g[cb.G_TRADING_ENABLED] and g[cb.G_TRIPS] > trips, 5, "the heartbeat trip")
                assert (int(g[cb.G_KILL_REASON]), int(g[cb.G_KILL_STAGE])) == (kill_reasons.KILL_HEARTBEAT_STALE,
                                                                             gateway_slot), cb.kill_text(g)
                assert "stage gateway heartbeat" in cb.kill_text(g)
                time.sleep(max(0.0, 1.5 - (time.monotonic() - stopped)))
            finally:
                os.kill(pid, signal.SIGCONT)
            until(lambda: not open_ours(server, prefix), 10, "every order cancelled once the gateway runs again")
            time.sleep(0.5)  # what the cancels bring back reaches the journal
        finally:
            block.close()
        run.proc.send_signal(signal.SIGTERM)
        code, output = out.finish(timeout=180)
        snapshot = server.account_snapshot()
    print("\n".join(line for line in output.splitlines() if line.startswith(("gateway:", "bot4:", "watchdog:"))))
    assert code == 5, output  # ExitCode.TRIPPED
    assert "trading was disabled during the run: heartbeat stale" in output, output
    figures = check_journal_against_venue(journal, snapshot, prefix, output)
    assert figures["fills"] > 0, figures
    unheard = client_ids.order_id(prefix, filled["clientOrderId"])
    assert unheard in {f[0] for f in journal_fills(figures["reports"])}  # (the journal equals the venue: all of it)
    assert "never placed: an earlier incarnation's order the venue does not know" in output, output


def usdm_server(speed=3, balance=100_000.0):
    return LoopbackServer([USDM], "usdm", speed=speed, wait_streams=2,
                          orders=dict(api_key=KEY, secret=SECRET, balance=balance, leverage=20))


def test_the_venues_dead_mans_switch_cancels_our_orders_when_the_whole_host_dies(live, tmp_path, monkeypatch):
    """USD-M futures with gateway.dead_man_ms: while armed the gateway keeps refreshing the venue's countdown
    cancel-all; SIGKILL of the supervisor and every process of the run at once (no one left to cancel anything):
    within the countdown the venue cancels every open order of ours by itself."""
    credentials(monkeypatch, "usdm")
    dead_man_s = 2.0
    with usdm_server() as server:
        conf = live_config(tmp_path, server, venue="usdm", exchange="binanceusdm",
                           gateway=f"dead_man_ms = {dead_man_s * 1000:g}\n")
        run = live("--live", "--config", str(conf), *SIGNAL_ARGS, "--duration", "120")
        out = Output(run, tmp_path / "run.log")
        out.wait_for(r"bot4: running", timeout=280)  # (the first run after an edit compiles the kernels)
        prefix = client_ids.prefix(run.name)
        routes = server.order_routes
        block = Block(run.name)
        try:
            until(lambda: block.gw("dead_man_refreshes") >= 2 and routes.countdowns and open_ours(server, prefix), 60,
                  lambda: f"resting orders and the countdown armed:\n{out.text[-3000:]}")
        finally:
            block.close()
        processes = [psutil.Process(run.proc.pid)] + run.descendants()
        killed = time.monotonic()
        for p in reversed(processes):  # the children first: no watchdog left to notice the supervisor's death
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        resting = len(open_ours(server, prefix))
        assert resting >= 1
        until(lambda: not open_ours(server, prefix), dead_man_s + 2.0, "the venue's countdown cancel-all",
              step=0.01)
        took = time.monotonic() - killed
        counts = dict(routes.counts)
        run.proc.wait(30)
        psutil.wait_procs(processes, timeout=30)
    print(f"whole host SIGKILLed -> the venue's countdown cancelled {counts['countdown_cancels']} open orders of ours "
          f"after {took * 1000:.0f} ms (countdown {dead_man_s * 1000:.0f} ms)")
    assert counts["countdowns_fired"] >= 1 and counts["countdown_cancels"] >= resting, counts
    assert took <= dead_man_s + 0.5  # refreshed a third of a countdown apart, so it fired within one of the kill
    assert KEY not in out.text and SECRET not in out.text
    postmortem.remove(run.name)  # (the watchdog may have written its account before it was killed)


def test_a_position_at_the_venue_that_the_run_does_not_hold_blocks_arming(live, tmp_path, monkeypatch):
    """A futures position already open on the account (placed and filled by hand, through ccxt): the live run's
    start-up reconciliation finds it, the start fails naming it, nothing is armed and no order is sent."""
    import ccxt

    from pipeline.ccxt_origins import replace_origin
    credentials(monkeypatch, "usdm")
    with usdm_server(speed=0) as server:
        ex = ccxt.binanceusdm({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False,
                               "options": {"fetchCurrencies": False, "fetchMargins": False}})
        api = dict(ex.urls["api"])
        api.pop("ws", None)
        ex.urls["api"] = replace_origin(api, server.rest_url)
        ex.load_markets()
        order = ex.create_order("BTC/USDT:USDT", "market", "buy", 0.01)
        assert order["status"] == "closed"
        assert server.account_snapshot()["positions"]["BTCUSDT"]["qty"] == pytest.approx(0.01)
        orders_before = server.order_routes.counts["orders"]
        conf = live_config(tmp_path, server, venue="usdm", exchange="binanceusdm")
        run = live("--live", "--config", str(conf), *SIGNAL_ARGS, "--duration", "30")
        code, output = Output(run, tmp_path / "run.log").finish(timeout=240)
        counts = dict(server.order_routes.counts)
        snapshot = server.account_snapshot()
    assert code == 4, output  # ExitCode.START_FAILED
    assert "bot4: start-up failed" in output and "the venue holds positions this run does not" in output, output
    assert re.search(r"usdm: the venue holds positions this run does not \(BTC/USDT:USDT \(key \d+\): \+0\.01\)", output), output
    assert "trading enabled" not in output and "bot4: running" not in output
    assert counts["orders"] == orders_before and len(snapshot["orders"]) == 1  # nothing sent but the hand's order


def test_spot_holdings_that_move_behind_the_runs_back_disable_trading_naming_the_currency(live, tmp_path, monkeypatch):
    """A spot venue keeps balances, not positions: the gateway holds each base currency's balance against its
    balance at the start plus the run's fills. BTC credited to the account by hand is a difference the fills do not
    explain: trading is disabled, and the operator is told which currency and by how much."""
    credentials(monkeypatch)
    with LoopbackServer([SPOT], "spot", speed=3, wait_streams=2,
                        orders=dict(api_key=KEY, secret=SECRET, balances={"USDT": 1_000_000.0, "BTC": 10.0})) as server:
        conf = live_config(tmp_path, server, gateway="holdings_check_s = 0.3\n")
        run = live("--live", "--config", str(conf), *SIGNAL_ARGS, "--duration", "120")
        out = Output(run, tmp_path / "run.log")
        out.wait_for(r"bot4: running.*trading enabled", timeout=280)
        block = Block(run.name)
        try:
            until(lambda: block.gw("holdings_checks") >= 3, 30, "three holdings checks")
            assert block.gw("holdings_mismatches") == 0 and block.g[cb.G_TRADING_ENABLED] == 1, out.text
            server.credit("BTC", 0.5)
            until(lambda: block.g[cb.G_TRADING_ENABLED] == 0, 15, lambda: f"no trip:\n{out.text[-3000:]}")
            assert block.gw("holdings_mismatches") >= 1
            assert int(block.g[cb.G_KILL_REASON]) == kill_reasons.KILL_VENUE_MISMATCH
        finally:
            block.close()
            run.proc.send_signal(signal.SIGTERM)
        code, output = out.finish(timeout=120)
    assert code == 5, output  # ExitCode.TRIPPED
    line = re.search(r"gateway: holdings mismatch, trading disabled: spot BTC \(BTC/USDT\): .*", output)
    assert line and "difference +0.5" in line.group(0), output
    assert "venue holdings mismatch" in output, output


def test_a_live_futures_run_amends_its_quotes_in_place_and_its_journal_equals_the_venue(live, tmp_path, monkeypatch):
    """Binance USD-M keeps an order through an amend (PUT order): a requote of a working quote goes out as one amend
    of the same order, not a new order and a cancel. The journal's fills equal the venue's trades, every order's end
    is the venue's, and each amended order's last amended price and quantity are the venue's."""
    credentials(monkeypatch, "usdm")
    journal = tmp_path / "journal"
    with usdm_server(speed=3) as server:
        conf = live_config(tmp_path, server, venue="usdm", exchange="binanceusdm",
                           extra="[execute]\nmax_position_usd = 20000\n")
        run = live("--live", "--config", str(conf), *SIGNAL_ARGS, "--duration", "120", "--journal", str(journal))
        out = Output(run, tmp_path / "run.log")
        out.wait_for(r"bot4: running.*trading enabled", timeout=280)
        block = Block(run.name)
        try:
            until(lambda: block.gw("amends_applied") >= 3, 90, lambda: f"three amends:\n{out.text[-3000:]}")
        finally:
            block.close()
            run.proc.send_signal(signal.SIGTERM)
        code, output = out.finish(timeout=120)
        snapshot = server.account_snapshot()
        puts = server.order_routes.requests.get(("PUT", "/fapi/v1/order"), 0)
    assert code == 0, output
    figures = check_journal_against_venue(journal, snapshot, client_ids.prefix(run.name), output)
    reports = figures["reports"]
    amended = reports[reports["state"] == records.ORD_AMENDED]
    assert len(amended) >= 3 and puts >= len(set(amended["order_id"].tolist())), (len(amended), puts)
    venue = {client_ids.order_id(client_ids.prefix(run.name), o["clientOrderId"]): o for o in snapshot["orders"]}
    last = {int(r["order_id"]): r for r in amended}
    for oid, r in last.items():
        o = venue[oid]
        assert (round(float(o["price"]), 8), round(float(o["qty"]), 8)) == (round(float(r["price"]), 8),
                                                                            round(float(r["qty"]), 8)), (oid, o, r)
    assert "amends" in re.findall(r"gateway \(live venues\):.*", output)[-1], output
