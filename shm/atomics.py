"""CPU-ordering intrinsics for numba (numba has no atomics of its own).

Each intrinsic takes an int64 array and an element index. On x86-64 an acquire load and a release store
both compile to a plain ``mov``; their job is to stop LLVM from hoisting a load out of a spin loop or
reordering payload stores past the cursor store. ``fence_seq_cst`` is an ``mfence``, needed only by the
sleep/wake handshake (a Dekker pattern: acquire/release alone cannot order a store before a later load).
"""
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic


def _element_ptr(context, builder, arr_type, arr_value, index):
    arr = context.make_array(arr_type)(context, builder, arr_value)
    return cgutils.get_item_pointer(context, builder, arr_type, arr, [index], wraparound=False)


def _check(arr_type, index_type):
    if not isinstance(arr_type, types.Array) or arr_type.dtype != types.int64 or arr_type.ndim != 1:
        raise TypeError(f"atomics need a 1-d int64 array, got {arr_type}")
    if not isinstance(index_type, types.Integer):
        raise TypeError(f"atomics need an integer index, got {index_type}")


@intrinsic
def load_acquire(typingctx, arr, index):
    """Load ``arr[index]`` with acquire ordering: later loads cannot move before it."""
    _check(arr, index)

    def codegen(context, builder, signature, args):
        ptr = _element_ptr(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, ordering="acquire", align=8)

    return types.int64(arr, index), codegen


@intrinsic
def store_release(typingctx, arr, index, value):
    """Store ``arr[index] = value`` with release ordering: earlier stores cannot move after it."""
    _check(arr, index)

    def codegen(context, builder, signature, args):
        ptr = _element_ptr(context, builder, signature.args[0], args[0], args[1])
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(val, ptr, ordering="release", align=8)
        return context.get_dummy_value()

    return types.void(arr, index, value), codegen


@intrinsic
def fetch_add(typingctx, arr, index, value):
    """Atomically add ``value`` to ``arr[index]`` (seq_cst) and return the previous value."""
    _check(arr, index)

    def codegen(context, builder, signature, args):
        ptr = _element_ptr(context, builder, signature.args[0], args[0], args[1])
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, val, ordering="seq_cst")

    return types.int64(arr, index, value), codegen


@intrinsic
def compare_exchange(typingctx, arr, index, expected, desired):
    """Atomically (seq_cst) set ``arr[index] = desired`` if it equals ``expected``; returns whether it did."""
    _check(arr, index)

    def codegen(context, builder, signature, args):
        ptr = _element_ptr(context, builder, signature.args[0], args[0], args[1])
        old = context.cast(builder, args[2], signature.args[2], types.int64)
        new = context.cast(builder, args[3], signature.args[3], types.int64)
        pair = builder.cmpxchg(ptr, old, new, ordering="seq_cst", failordering="seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(arr, index, expected, desired), codegen


@intrinsic
def fence_seq_cst(typingctx):
    """Full fence: no load or store moves across it in either direction."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


if config.DISABLE_JIT:
    # Interpreted kernels (NUMBA_DISABLE_JIT=1, for tests and debugging): plain element access; the
    # interpreter performs each as one indivisible step and never reorders them.
    def load_acquire(arr, index):  # noqa: F811
        return int(arr[index])

    def store_release(arr, index, value):  # noqa: F811
        arr[index] = value

    def fetch_add(arr, index, value):  # noqa: F811
        previous = int(arr[index])
        arr[index] = previous + value
        return previous

    def compare_exchange(arr, index, expected, desired):  # noqa: F811
        if int(arr[index]) != expected:
            return False
        arr[index] = desired
        return True

    def fence_seq_cst():  # noqa: F811
        pass
