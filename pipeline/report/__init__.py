"""The performance report of a run: equity, drawdown, PnL and costs, risk-adjusted figures, fills and
mark-outs, inventory, attribution, latency and data gaps, from a run's market events, intents and
execution reports (a journal or a backtest's arrays). ``inputs`` says what a report is made from,
``prices`` marks instruments, ``metrics`` computes, ``figures`` and ``html`` draw, ``build`` writes."""
