"""Shared-memory and semaphore names of a run: /bot4.<run>.<what>."""
from shm.segment import NAME_PREFIX


def control(run: str) -> str:
    return f"{NAME_PREFIX}{run}.control"


def ring(run: str, ring_name: str) -> str:
    return f"{NAME_PREFIX}{run}.ring.{ring_name}"


def semaphore(run: str, stage: str) -> str:
    return f"{NAME_PREFIX}{run}.sem.{stage}"


def run_prefix(run: str) -> str:
    return f"{NAME_PREFIX}{run}."


def feature_store(run: str) -> str:
    return f"{NAME_PREFIX}{run}.features"


def garch_params(run: str) -> str:
    return f"{NAME_PREFIX}{run}.garch"


def allocator_weights(run: str) -> str:
    return f"{NAME_PREFIX}{run}.weights"


def model_requests(run: str) -> str:
    return f"{NAME_PREFIX}{run}.model"


def positions(run: str) -> str:
    return f"{NAME_PREFIX}{run}.positions"


def inference_shared(run: str) -> str:
    return f"{NAME_PREFIX}{run}.inference"
