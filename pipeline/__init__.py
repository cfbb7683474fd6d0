"""The pipeline's processes and how they are put together.

At the top: the supervisor (``bot4 run``), the config, the graph of rings and stages, the process registry.
Wings: ``hosting`` (duty cycle, stage host, launcher, topology, fused mode), ``safety`` (watchdog, panic
conditions, kill switch, alerts, arming), ``sources`` (ccxt and replay feed hosts, recording parsers),
``store`` (journal, recorder, journal replay, feature and GARCH stores, feature build).
"""
import shm  # noqa: F401  installs the kernel cache locator (shm.jit_cache) before any kernel is decorated
