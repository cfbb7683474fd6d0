"""``bot4``: run the pipeline, read its status, run fused mode, report on a run."""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys

from pipeline.config import ConfigError, allocation_note, load, settings_overrides
from pipeline.redact import has_password


def _run(args) -> int:
    from pipeline.supervisor import ExitCode, Supervisor
    try:
        overrides = settings_overrides(getattr(args, "set", None) or [])  # bot4 record has no --set
        if args.duration is not None:
            overrides.setdefault("run", {})["duration_s"] = args.duration
        if args.name:
            overrides.setdefault("run", {})["name"] = args.name
        if args.rate is not None:
            overrides.setdefault("feed", {})["rate_eps"] = args.rate
        if args.events is not None:
            overrides.setdefault("feed", {})["max_events"] = args.events
        if args.seed is not None:
            overrides.setdefault("feed", {})["seed"] = args.seed
        if args.quiet:
            overrides.setdefault("run", {})["status_interval_s"] = 0.0
        if args.table:
            overrides.setdefault("run", {})["status_table"] = True
        if args.metrics_port is not None:
            overrides.setdefault("metrics", {})["port"] = args.metrics_port
        if args.metrics_host is not None:
            overrides.setdefault("metrics", {})["host"] = args.metrics_host
        if args.idle:
            overrides.setdefault("topology", {})["idle"] = args.idle
        if args.journal:
            overrides.setdefault("journal", {})["dir"] = args.journal
        if args.dsn:
            overrides.setdefault("recorder", {})["dsn"] = args.dsn
        dsn = overrides.get("recorder", {}).get("dsn")
        if isinstance(dsn, str) and has_password(dsn):  # every user sees a command line (ps, /proc/PID/cmdline)
            raise ConfigError("the DSN on the command line (--dsn or --set recorder.dsn) carries a password, which "
                              "every user of this machine can read in ps: give the DSN without it and put the "
                              "password in ~/.pgpass (or the file PGPASSFILE names) or PGPASSWORD, or set "
                              "recorder.dsn in a config file only you can read (chmod 600)")
        if getattr(args, "record", False):
            overrides.setdefault("run", {})["mode"] = "record"
        config = load(args.config, overrides)
        if config.gateway.live_venues and not getattr(args, "live", False):
            raise ConfigError(f"gateway.live_venues={list(config.gateway.live_venues)!r} sends orders to those venues "
                              "(real money unless gateway.sandbox): add --live to mean it, or clear "
                              "gateway.live_venues to trade on the paper venue")
    except ConfigError as exc:
        print(f"bot4: config error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    if not config.metrics.port:
        return Supervisor(config).run()
    from pipeline.exporter import Endpoint
    try:
        endpoint = Endpoint(config.run.name, config.metrics.host, config.metrics.port)
    except OSError as exc:  # before anything is created or spawned
        print(f"bot4: start-up failed: metrics.port={config.metrics.port} metrics.host={config.metrics.host!r}: cannot "
              f"listen there ({exc.strerror or exc}): choose a free port, an address of this host, or metrics.port=0 "
              "(no endpoint)", file=sys.stderr)
        return ExitCode.START_FAILED
    print(f"bot4: Prometheus metrics at {endpoint.url}", flush=True)
    try:
        return Supervisor(config).run()
    finally:
        endpoint.close()


def _metrics(args) -> int:
    from tools import metrics
    return metrics.main(args.name, args.host, args.port)


def _top(args) -> int:
    from tools import top
    return top.main(args.name)


def _status(args) -> int:
    from tools import status
    return status.main(args.name)


def _profile(args) -> int:
    from tools import stage_profile
    return stage_profile.profile(args.name, args.seconds, args.out, args.interval_ms, args.py_spy)


def _latency(args) -> int:
    from tools import stage_profile
    return stage_profile.latency(args.name, args.out)


def _killswitch(args) -> int:
    from tools import killswitch
    return killswitch.main(args.action, args.name, getattr(args, "reason", ""))


def _fused(args) -> int:
    from pipeline.hosting.fused import run_fused
    from pipeline.report import metrics, text
    from pipeline.report.inputs import KeptRun
    from pipeline.store.journal_replay import fused_journal
    try:
        config = load(args.config, settings_overrides(args.set or []))
        if args.seed is not None:
            config = config.with_overrides(feed={"seed": args.seed})
    except ConfigError as exc:
        print(f"bot4: config error: {exc}", file=sys.stderr)
        return 2
    if allocation_note(config):
        print(f"note: {allocation_note(config)}")
    journal = fused_journal(config, args.events, args.journal) if args.journal else None
    kept = KeptRun(journal)  # the market too: the summary marks positions at its last prices
    try:
        result = run_fused(config, args.events, journal=kept)
    finally:
        if journal is not None:
            journal.close()
    digest = hashlib.sha256(result.reports.tobytes()).hexdigest()[:16]
    for name, c in result.counters.items():
        print(f"{name:<10} in {c['in']:>9,} out {c['out']:>9,}")
    print(f"reports {len(result.reports):,} quarantined {result.counters['validate']['quarantined']:,} "
          f"report digest {digest}")
    universe = {"venues": list(config.feed.venues), "symbols": list(config.feed.symbols)}
    summary = metrics.analyse(kept.record(config.risk.capital_usd, {"universe": universe})).summary
    for line in text.lines(summary):
        print(line)
    return 0


def _backtest(args) -> int:
    from pipeline.backtest import sweep
    from pipeline.backtest.data import BacktestInputError
    from pipeline.backtest.run import run as run_backtest
    from pipeline.config import merge_overrides
    from pipeline.hosting.models import ModelLoadError
    from pipeline.report import text
    try:
        overrides = settings_overrides(args.set or [])
        if args.seed is not None:
            overrides.setdefault("feed", {})["seed"] = args.seed
        config = load(args.config, overrides)
        points = sweep.grid(args.sweep) if args.sweep else []
        if points:  # every point's config must load before any runs
            for settings in points:
                load(args.config, merge_overrides(overrides, settings_overrides(settings)))
    except ConfigError as exc:
        print(f"bot4: config error: {exc}", file=sys.stderr)
        return 2
    if points:
        base = (["--config", args.config] if args.config else []) + [a for s in args.set or [] for a in ("--set", s)]
        base += ["--events", str(args.events)] if args.events else []
        base += ["--seed", str(args.seed)] if args.seed is not None else []
        done = sweep.run(points, args.out, base, jobs=args.jobs)
        print(f"sweep of {len(done)} points into {args.out} (sweep.json):")
        for p in done:
            figures = ("exit " + str(p.returncode) + ": " + str(p.summary.get("error")) if p.returncode else
                       f"net PnL {p.summary['pnl']['net']:,.2f}  fills {p.summary['trading']['fills']:,}  "
                       f"Sharpe {p.summary['risk_adjusted']['sharpe']}")
            print(f"  {p.index:>3}  {' '.join(p.settings):<60} {figures}")
        return 0 if all(p.returncode == 0 for p in done) else 1
    try:
        outcome = run_backtest(config, args.out, args.events or 0)
    except ConfigError as exc:
        print(f"bot4: config error: {exc}", file=sys.stderr)
        return 2
    except BacktestInputError as exc:
        print(f"bot4 backtest: {exc}", file=sys.stderr)
        return 2
    except ModelLoadError as exc:  # a model, ensemble or sizer the config names that cannot serve
        print(f"bot4 backtest: {exc}", file=sys.stderr)
        return 2
    if allocation_note(config):
        print(f"note: {allocation_note(config)}")
    rate = outcome.events / outcome.elapsed_s if outcome.elapsed_s > 0 else float("nan")
    print(f"backtest of {outcome.market.source}: {outcome.events:,} events in {outcome.elapsed_s:.2f} s "
          f"({rate:,.0f} events/s)")
    if not args.quiet:
        for note in outcome.market.notes:
            print(f"data: {note}")
        for line in text.lines(outcome.report.summary):
            print(line)
    print(f"report written to {outcome.out}: report.json, report.html; journal in {outcome.out}/journal")
    return 0


def _warmup(args) -> int:
    from pipeline.hosting import warmup
    from pipeline.plan import resolve
    try:
        plan = resolve(load(args.config))
    except ConfigError as exc:
        print(f"bot4: config error: {exc}", file=sys.stderr)
        return 2
    try:
        warmed = warmup.compile_all(plan, jobs=args.jobs)
        if warmed.compiled:  # compiled now: a fresh process must load every kernel from the cache
            silent = warmup.CompileProgress(len(warmed.kernels), io.StringIO())
            again = warmup.compile_all(plan, progress=silent)
            if again.compiled:
                print(f"bot4 warmup: {', '.join(k.name for k in again.compiled)} compiled again instead of loading "
                      f"from the cache in {warmup.cache_dir()}: numba does not cache it", file=sys.stderr)
                return 1
    except warmup.WarmupError as exc:
        print(f"bot4 warmup: {exc}", file=sys.stderr)
        return 1
    how = (f"compiled {len(warmed.compiled)} in {warmed.elapsed_s:.1f} s" if warmed.compiled
           else f"loaded in {warmed.elapsed_s:.1f} s")
    print(f"bot4 warmup: all {len(warmed.kernels)} kernels cached in {warmup.cache_dir()} ({how})")
    return 0


def _config(args) -> int:
    from tools import config_doc
    if args.action == "defaults":
        print(config_doc.defaults_toml(), end="")
        return 0
    return config_doc.check(args.file)


def _replay(args) -> int:
    from pipeline.store.journal_replay import LIVE, RECORD, replay
    try:
        config = load(args.config, settings_overrides(args.set or []))
    except ConfigError as exc:
        print(f"bot4: config error: {exc}", file=sys.stderr)
        return 2
    outcome = replay(config, args.journal)
    how = {LIVE: "execute steps of a live run", RECORD: "a record-mode journal through fused mode"}
    print(f"replayed {outcome.market_events:,} market events ({how.get(outcome.kind, 'fused mode')}): "
          f"{len(outcome.orders()):,} orders, {len(outcome.reports):,} reports")
    for note in outcome.notes:
        print(f"note: {note}")
    if outcome.kind == RECORD:
        print("nothing to compare with: a record-mode journal holds the market only, no decision")
        return 0
    if not outcome.recorded_reports and not len(outcome.reports):
        print("the journal holds no execution reports, and the replay made none")
        return 0
    if outcome.identical:
        print(f"identical to the {outcome.recorded_reports:,} recorded reports")
        return 0
    print(f"DIFFERENT from the {outcome.recorded_reports:,} recorded reports, first at report "
          f"{outcome.first_difference}")
    return 1


def _features_latest(args) -> int:
    import numpy as np

    from pipeline.store.feature_store import FeatureStoreReader
    from shm.segment import SegmentError
    from stages.records import FEATURE_NAMES
    try:
        reader = FeatureStoreReader(args.name)
    except SegmentError as exc:
        print(f"bot4: {exc}", file=sys.stderr)
        return 1
    try:
        vectors = reader.snapshot()
    finally:
        reader.close()
    if not len(vectors):
        print("no feature vector written yet")
        return 0
    print(f"{'':<20}" + "".join(f"{f'v{v.venue}/s{v.symbol}':>16}" for v in vectors.view(np.recarray)))
    print(f"{'origin_seq':<20}" + "".join(f"{int(seq):>16}" for seq in vectors["origin_seq"]))
    for j, name in enumerate(FEATURE_NAMES):
        print(f"{name:<20}" + "".join(f"{value:>16.6g}" for value in vectors["values"][:, j]))
    return 0


def _features(args) -> int:
    if args.action == "latest":
        return _features_latest(args)
    from pipeline.store import feature_build
    try:
        config = load(args.config)
        market, source = feature_build.market_source(config, args.journal)
    except ConfigError as exc:
        print(f"bot4: config error: {exc}", file=sys.stderr)
        return 2
    result = feature_build.build(config, market, args.out, source)
    print(f"wrote {result.rows:,} feature rows from {result.market_events:,} market events "
          f"({result.quarantined:,} quarantined) to {result.path}")
    return 0


def _risk(args) -> int:
    if args.action == "explain":
        from tools import explain_orders
        return explain_orders.main(args.extra)
    from tools import fit_garch
    return fit_garch.main(args.extra)


def _train(args) -> int:
    from tools import train
    return train.main(args.extra)


def _train_q(args) -> int:
    from tools import train_q
    return train_q.main(args.extra)


def _model(args) -> int:
    from tools import model_publish
    return model_publish.main(args.action, args.run, getattr(args, "dir", None), args.timeout)


def _allocator(args) -> int:
    from tools import allocator_weights
    changes = {regime: text for regime, text in (("trending", args.trending), ("range_bound", args.range_bound),
                                                  ("volatile", args.volatile)) if text is not None}
    return allocator_weights.main(args.name, changes)


def _report(args) -> int:
    from pipeline.config import RiskConfig
    from pipeline.report import build, inputs, metrics, text
    target = args.journal_or_run
    run_name = None
    if os.path.isdir(target):
        directory = target
    else:  # a run name: bot4 run writes its journal into the config's journal.dir as is (segments name the run)
        try:
            config = load(args.config)
        except ConfigError as exc:
            print(f"bot4: config error: {exc}", file=sys.stderr)
            return 2
        if not config.journal.dir:
            print(f"bot4 report: {target!r} is not a directory, and as a run name it needs the run's journal "
                  "directory: give the journal directory, or --config with the journal.dir the run used",
                  file=sys.stderr)
            return 2
        directory, run_name = config.journal.dir, target
    if args.equity is not None:
        equity, equity_source = args.equity, "--equity"
    elif args.config:
        try:
            equity, equity_source = load(args.config).risk.capital_usd, f"risk.capital_usd of {args.config}"
        except ConfigError as exc:
            print(f"bot4: config error: {exc}", file=sys.stderr)
            return 2
    else:  # the journal does not record the config: the risk stage's default starting equity
        equity, equity_source = RiskConfig().capital_usd, "risk.capital_usd default (the journal does not say)"
    try:
        settings = metrics.Settings(sample_interval_ns=int(round(args.sample_ms * 1e6)),
                                    gap_threshold_ns=int(round(args.gap_s * 1e9)))
        run = inputs.from_journal(directory, equity, run_id=args.run_id, run_name=run_name,
                                  meta={"initial_equity_source": equity_source})
    except (ValueError, inputs.ReportInputError) as exc:
        print(f"bot4 report: {exc}", file=sys.stderr)
        return 2
    out = args.out or os.path.join(directory, "report")
    written = build.write(run, out, settings)
    print(f"report written to {written.directory}: report.json, report.html, {', '.join(written.figures)}")
    for line in text.lines(written.summary):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot4", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the live pipeline (synthetic market, paper venue by default)")
    run.add_argument("--config", help="TOML config; defaults are embedded")
    run.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                     help="override one config key (repeat), e.g. allocator.trending=momentum=1")
    run.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    run.add_argument("--rate", type=float, help="feed events per second (0 = max)")
    run.add_argument("--events", type=int, help="stop after this many feed events")
    run.add_argument("--seed", type=int)
    run.add_argument("--name", help="run name (shared-memory prefix /bot4.<name>.)")
    run.add_argument("--idle", choices=("auto", "busy_spin", "yielding", "sleeping", "blocking"))
    run.add_argument("--quiet", action="store_true", help="no status lines, summary only")
    run.add_argument("--live", action="store_true", help="send the orders of gateway.live_venues to those venues "
                     "(without it a run with live venues refuses to start)")
    run.add_argument("--journal", help="record market events, intents and reports into this directory")
    run.add_argument("--dsn", help="PostgreSQL DSN without a password (that goes in ~/.pgpass, PGPASSFILE or "
                                   "PGPASSWORD): the recorder copies the journal into it (needs --journal)")
    run.set_defaults(func=_run)
    rec = sub.add_parser("record", help="record the market only: feed, validate, journal (and the recorder with "
                                        "--dsn); nothing trades")
    for flag, kwargs in (("--config", {}), ("--duration", {"type": float}), ("--rate", {"type": float}),
                         ("--events", {"type": int}), ("--seed", {"type": int}), ("--name", {}),
                         ("--idle", {"choices": ("auto", "busy_spin", "yielding", "sleeping", "blocking")})):
        rec.add_argument(flag, **kwargs, help=next(a.help for a in run._actions if flag in a.option_strings))
    rec.add_argument("--quiet", action="store_true", help="no status lines, summary only")
    rec.add_argument("--journal", required=True, help="journal directory: market events and quarantined ones")
    rec.add_argument("--dsn", help="PostgreSQL DSN without a password (~/.pgpass, PGPASSFILE or PGPASSWORD): "
                                   "the recorder copies the journal into it")
    rec.set_defaults(func=_run, record=True)
    for command in (run, rec):
        command.add_argument("--table", action="store_true", help="print the whole stage table each status "
                             "interval (run.status_table), not one line")
        command.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on this "
                             "port (metrics.port; 0 = none)")
        command.add_argument("--metrics-host", metavar="ADDRESS", help="the address the metrics endpoint listens on "
                             "(metrics.host, default 127.0.0.1)")
    me = sub.add_parser("metrics", help="serve a running pipeline's Prometheus metrics (one started without "
                                        "--metrics-port), until Ctrl-C")
    me.add_argument("--name", default="main", help="run name")
    me.add_argument("--port", type=int, default=9484, help="TCP port (default 9484; 0 = any free one)")
    me.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    me.set_defaults(func=_metrics)
    tp = sub.add_parser("top", help="a live terminal view of a running pipeline: stages, rates, latencies, the kill "
                                    "state, positions and PnL (q quits)")
    tp.add_argument("--name", default="main", help="run name")
    tp.set_defaults(func=_top)
    st = sub.add_parser("status", help="live figures of a running pipeline, read from shared memory")
    st.add_argument("--name", default="main")
    st.set_defaults(func=_status)
    pf = sub.add_parser("profile", help="sample a running pipeline (read-only) and write where each stage's time "
                                        "goes: profile.html, profile.json, PNGs")
    pf.add_argument("--name", default="main", help="run name")
    pf.add_argument("--seconds", type=float, default=5.0, help="how long to sample (default 5)")
    pf.add_argument("--out", help="report directory (default: ./profile-RUN-TIME)")
    pf.add_argument("--interval-ms", type=float, default=10.0, help="ms between samples (default 10)")
    pf.add_argument("--py-spy", action="store_true", help="also sample the Python-side hosts with py-spy "
                                                          "(pip install 'bot4[profile]'; needs ptrace rights)")
    pf.set_defaults(func=_profile)
    lt = sub.add_parser("latency", help="tick-to-order histogram of a running pipeline (PNG)")
    lt.add_argument("--name", default="main", help="run name")
    lt.add_argument("--out", help="PNG file (default: ./latency-RUN.png)")
    lt.set_defaults(func=_latency)
    ks = sub.add_parser("killswitch", help="kill switch: status, trip, arm (through shared memory)")
    ks_sub = ks.add_subparsers(dest="action", required=True)
    for action, text in (("status", "state, reason, since when, switch reading, conditions holding"),
                         ("trip", "disable trading now (latched)"),
                         ("arm", "re-enable trading if the switch reads armed and nothing blocks it")):
        p = ks_sub.add_parser(action, help=text)
        p.add_argument("--name", default="main", help="run name")
        if action == "trip":
            p.add_argument("--reason", required=True, help="why (kept with the trip)")
    ks.set_defaults(func=_killswitch)
    fu = sub.add_parser("fused", help="all kernels in one process on the synthetic clock (deterministic)")
    fu.add_argument("--config")
    fu.add_argument("--events", type=int, default=100_000)
    fu.add_argument("--seed", type=int)
    fu.add_argument("--journal", help="record market events, intents and reports into this directory")
    fu.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config key (repeat)")
    fu.set_defaults(func=_fused)
    bt = sub.add_parser("backtest", help="the seven kernels over a recording, a journal or the synthetic market, "
                        "with the venue model (latency, queue position, fees, funding), into a journal and a report")
    bt.add_argument("--config", help="TOML config: [feed] (synthetic, or source = \"replay\" with files), "
                    "[backtest] (journal, start, end), [venue] (the venue model)")
    bt.add_argument("--out", required=True, help="directory for report.json, report.html, the figures and journal/")
    bt.add_argument("--events", type=int, help="synthetic market: this many events (default feed.max_events)")
    bt.add_argument("--seed", type=int)
    bt.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config key (repeat)")
    bt.add_argument("--sweep", action="append", metavar="SECTION.KEY=V1,V2,...",
                    help="a grid: one backtest per combination, each in its own process, into OUT/point-NNN")
    bt.add_argument("--jobs", type=int, default=1, help="sweep points run at once (default 1)")
    bt.add_argument("--quiet", action="store_true", help="only the first and last lines")
    bt.set_defaults(func=_backtest)
    wu = sub.add_parser("warmup", help="compile every kernel a run of the config needs into the cache, ahead of "
                        "time (an install step, ExecStartPre): exit 0 when all are cached")
    wu.add_argument("--config", help="the TOML config the runs will use (its stages and groups are the kernels)")
    wu.add_argument("--jobs", type=int, default=1, help="kernels compiled at once in separate processes (default "
                    "1: on 2 cores more did not help, see bench/README.md)")
    wu.set_defaults(func=_warmup)
    co = sub.add_parser("config", help="the config's keys: defaults (every key, unit, range and doc as TOML), "
                        "check FILE (without running)")
    co_sub = co.add_subparsers(dest="action", required=True)
    co_sub.add_parser("defaults", help="every key with its default, unit, range and doc, as TOML")
    cc = co_sub.add_parser("check", help="load and check a config file as bot4 run would; exit 2 naming the key")
    cc.add_argument("file")
    co.set_defaults(func=_config)
    rp = sub.add_parser("replay", help="replay a journal and compare the orders: a live run's execute steps, a "
                                       "fused run through fused mode; a record-mode journal runs the strategy "
                                       "over its market")
    rp.add_argument("journal", help="journal directory (from bot4 run, record or fused with --journal)")
    rp.add_argument("--config", help="the config the journal was recorded with (defaults if omitted)")
    rp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config key (repeat)")
    rp.set_defaults(func=_replay)
    fe = sub.add_parser("features", help="feature store: build the offline (Parquet) store from recorded data")
    fe_sub = fe.add_subparsers(dest="action", required=True)
    fb = fe_sub.add_parser("build", help="run validate and feature kernels over recorded events into Parquet")
    fb.add_argument("--config", help="TOML config; its feed.files (feed.source = \"replay\") are the input "
                                     "unless --journal is given")
    fb.add_argument("--journal", help="journal directory: build from its market stream")
    fb.add_argument("--out", required=True, help="Parquet file to write")
    fb.set_defaults(func=_features)
    fl = fe_sub.add_parser("latest", help="the online store of a running pipeline: latest vector per instrument")
    fl.add_argument("--name", default="main", help="run name")
    fl.set_defaults(func=_features)
    rk = sub.add_parser("risk", help="risk tools: fit-garch (GARCH(1,1) per symbol with arch), explain (orders)")
    rk_sub = rk.add_subparsers(dest="action", required=True)
    rk_sub.add_parser("fit-garch", help="fit GARCH(1,1) on recorded bar returns; see its --help", add_help=False)
    rk_sub.add_parser("explain", help="orders in a journal with the risk inputs that sized them", add_help=False)
    rk.set_defaults(func=_risk)
    sub.add_parser("train", help="walk-forward training of the ensemble's members into models/; see its --help",
                   add_help=False).set_defaults(func=_train)
    sub.add_parser("train-q", help="a sizing policy (qvalue member) by fitted Q-iteration in the backtester; see "
                   "its --help", add_help=False).set_defaults(func=_train_q)
    al = sub.add_parser("allocator", help="the regime mode's allocator: the weights a running pipeline uses")
    al_sub = al.add_subparsers(dest="action", required=True)
    aw = al_sub.add_parser("weights", help="show the weights in force, or publish new ones for some regimes")
    aw.add_argument("--name", default="main", help="run name")
    for regime in ("trending", "range-bound", "volatile"):
        aw.add_argument(f"--{regime}", metavar="STRATEGY=WEIGHT,...",
                        help=f'new weights when {regime.replace("-", " ")} ("momentum=1,mean_reversion=0.5"; "off": '
                             "none); absent: unchanged")
    al.set_defaults(func=_allocator)
    md = sub.add_parser("model", help="hand a model or ensemble version to a running pipeline, or roll back")
    md_sub = md.add_subparsers(dest="action", required=True)
    mp = md_sub.add_parser("publish", help="verify DIR, have the run's inference stage load it and swap to it")
    mp.add_argument("run", help="run name")
    mp.add_argument("dir", help="models/ensemble/<v>, models/<name>/<v>, or an .onnx with its .json beside")
    mr = md_sub.add_parser("rollback", help="return to the model set in use before the last swap")
    mr.add_argument("run", help="run name")
    for p in (mp, mr):
        p.add_argument("--timeout", type=float, default=180.0,
                       help="seconds to wait for the run's answer (a standby process starts and loads: seconds)")
    md.set_defaults(func=_model)
    rpt = sub.add_parser("report", help="performance report of a run from its journal: report.json, report.html, PNGs")
    rpt.add_argument("journal_or_run", help="journal directory, or a run name (its journal is the config's journal.dir)")
    rpt.add_argument("--out", help="report directory (default: JOURNAL/report)")
    rpt.add_argument("--config", help="the run's config: journal.dir for a run name, risk.capital_usd as equity")
    rpt.add_argument("--equity", type=float, help="initial equity, quote currency (default: the config's "
                                                  "risk.capital_usd, else its default)")
    rpt.add_argument("--run-id", type=lambda v: int(v, 0), help="which run of a directory several runs wrote "
                                                                "(default: the newest)")
    rpt.add_argument("--sample-ms", type=float, default=1000.0,
                     help="equity sampling interval in event time, ms (returns, Sharpe; default 1000)")
    rpt.add_argument("--gap-s", type=float, default=2.0, help="report data gaps longer than this, s (default 2)")
    rpt.set_defaults(func=_report)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("risk", "train", "train-q"):  # only these take their own arguments
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return int(args.func(args))
    except ConfigError as exc:  # what the config names cannot serve (e.g. the GARCH fit, read when planning)
        print(f"bot4: config error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): nothing left to say, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
