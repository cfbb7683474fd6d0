"""``bot4 backtest``: the seven kernels over recorded or synthetic data on event time, with the venue model, into a
journal and a performance report (data: what a backtest runs on; run: one backtest; sweep: a grid of them)."""
