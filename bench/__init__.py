"""Bot4 benchmarks (not part of the test suite; see bench/README.md).

* ``python -m bench.ping_pong_latency``     one-way hop latency between two pinned processes
* ``python -m bench.one_to_one_throughput`` records/s, one producer and one consumer on separate cores
* ``pytest bench/``                         pytest-benchmark micro-benchmarks (single process)
* ``python -m bench.ring_call_overhead``    diagnostic: cost of one shm.ring call inside njit code
* ``python -m bench.pipeline_latency``      whole pipeline (``bot4 run``), tick-to-order percentiles

The transport scripts run the numba ring next to its peers (a C shared-memory ring as the floor,
multiprocessing.Queue, faster-fifo, pyzmq ipc + msgpack) in the same run, interleaved, and prints
medians over rounds. Figures are printed, never asserted.
"""
