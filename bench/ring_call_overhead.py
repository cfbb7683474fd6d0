"""Diagnostic: what one call of shm.ring.try_write/read costs inside njit code, and where it goes.

Single process, local ring (shm.ring.local_ring), loops inside @njit. For each way of calling the ring
kernels it prints ns per call of an empty ``read`` (what a consumer's spin loop pays per check), ns per
record of ``try_write`` + ``read`` of 1 record, and of 256-record batches.

* ``API``                         the kernels as shipped (numba call, arrays passed as arguments)
* ``API, raw-pointer arrays``     the same compiled kernels, arguments rebuilt with numba.carray over raw
                                  addresses (arrays without an NRT meminfo: no reference counting)
* ``inlined``                     the same Python source re-jitted with inline='always'
* ``inlined, raw-pointer cursors`` inlined, cursor arrays rebuilt with numba.carray

The variants exist only to locate the cost; they are not how the product calls the ring. It also counts
the NRT_incref/NRT_decref calls in the compiled ``read``: each one is an atomic read-modify-write.
Run: ``python -m bench.ring_call_overhead``.
"""
from __future__ import annotations

import re
import sys
import time

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from bench._common import RECORD, machine_info
from shm import ring


@intrinsic
def _pointer_like(typingctx, address, like):
    """``address`` (int) as a pointer to ``like``'s element type."""
    dtype = like.dtype
    sig = types.CPointer(dtype)(address, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(dtype)))

    return sig, codegen


def _make_loop(read, write, raw_cursors, raw_records):
    @njit
    def loop(p0, c0, r0, src0, out0, n, iterations, empty):
        p = carray(_pointer_like(p0.ctypes.data, p0), p0.shape[0]) if raw_cursors else p0
        c = carray(_pointer_like(c0.ctypes.data, c0), c0.shape[0]) if raw_cursors else c0
        r = carray(_pointer_like(r0.ctypes.data, r0), r0.shape[0]) if raw_records else r0
        src = carray(_pointer_like(src0.ctypes.data, src0), src0.shape[0]) if raw_records else src0
        out = carray(_pointer_like(out0.ctypes.data, out0), out0.shape[0]) if raw_records else out0
        moved = 0
        for _ in range(iterations):
            if not empty:
                write(p, c, r, src, n)
            moved += read(p, c, r, out, n)
        return moved
    return loop


def _nrt_call_sites(dispatcher) -> tuple[int, int]:
    """NRT_incref / NRT_decref call sites in the optimized LLVM IR of the compiled function itself."""
    ir = "\n".join(dispatcher.inspect_llvm().values())
    body = re.search(r"define [^\n]*@_ZN[^\n]*4read[^\n]*\{(.*?)\n\}", ir, re.S)
    text = body.group(1) if body else ir
    return text.count("@NRT_incref("), text.count("@NRT_decref(")


def main(argv=None) -> int:
    reps = 5
    p, c, r = ring.local_ring(RECORD, 1024)
    src = np.zeros(256, RECORD)
    out = np.zeros(256, RECORD)
    read_inlined = njit(inline="always")(ring.read.py_func)
    write_inlined = njit(inline="always")(ring.try_write.py_func)
    variants = [
        ("API", ring.read, ring.try_write, False, False),
        ("API, raw-pointer arrays", ring.read, ring.try_write, True, True),
        ("inlined", read_inlined, write_inlined, False, False),
        ("inlined, raw-pointer cursors", read_inlined, write_inlined, True, False),
    ]
    cases = [("empty read, ns/call", True, 1, 2_000_000), ("write+read 1, ns/rec", False, 1, 2_000_000),
             ("write+read 256, ns/rec", False, 256, 20_000)]
    print("== shm.ring call overhead inside njit (single process, local ring, median of 5) ==")
    print(f"machine: {machine_info()}")
    uncached_read = njit(ring.read.py_func)  # same source; cached dispatchers cannot show their assembly
    uncached_read(p, c, r, out, 1)
    inc, dec = _nrt_call_sites(uncached_read)
    print(f"compiled shm.ring.read: {inc} NRT_incref and {dec} NRT_decref call sites (optimized IR); each "
          "executed one is an atomic read-modify-write of an argument array's refcount\n")
    print(f"{'variant':<30}" + "".join(f"{name:>24}" for name, *_ in cases))
    for label, rd, wr, raw_c, raw_r in variants:
        loop = _make_loop(rd, wr, raw_c, raw_r)
        cells = []
        for _, empty, n, iterations in cases:
            loop(p, c, r, src, out, n, 10, empty)  # compile
            times = []
            for _ in range(reps):
                t0 = time.perf_counter_ns()
                loop(p, c, r, src, out, n, iterations, empty)
                times.append((time.perf_counter_ns() - t0) / iterations / (1 if empty else n))
            cells.append(f"{float(np.median(times)):>24.2f}")
        print(f"{label:<30}" + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
