"""Stage-level profiling of a running pipeline (``bot4 profile``, ``bot4 latency``): sampled read-only from the
control block and the rings' cursors in shared memory, analysed into where each stage's time goes, and written
as a report (profile.json, profile.html, PNGs made with matplotlib)."""
