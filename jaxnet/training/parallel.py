"""Data parallelism on JAX's own sharding: one mesh axis, "data", that batches are split along.

Params and optimizer state are replicated on every device; each global batch is sharded
along "data", so each device runs the (hand-derived) backward on its slice and XLA's SPMD
partitioner adds the all-reduce of the gradients. No pmap and no hand-written communication:
a global batch means the same on 1 device as on 8, and across several processes.
"""

import hashlib
import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh named "data" over `devices` (default: every device of every process)."""
    return Mesh(np.array(jax.devices() if devices is None else devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same whole array on every device: params, optimizer state, datasets."""
    return NamedSharding(mesh, PartitionSpec())


def sharded_batch(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split across the "data" axis."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raises ValueError unless the global batch splits evenly over the devices."""
    devices = mesh.size
    if batch_size % devices:
        lower, upper = batch_size // devices * devices, -(-batch_size // devices) * devices
        raise ValueError(
            f"batch_size={batch_size} does not split evenly over {devices} devices; use a "
            f"multiple of {devices}, e.g. {max(lower, devices)} or {upper}."
        )


def initialize(coordinator_address: str, num_processes: int, process_id: int, *,
               timeout_seconds: int = 60) -> None:  # fmt: skip
    """Joins a multi-process run through `jax.distributed` (CPU collectives use gloo).

    Raises:
      ValueError: process_id out of range.
      RuntimeError: the coordinator could not be reached within timeout_seconds.
    """
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id} must lie in [0, num_processes={num_processes}).")
    if process_id != 0:
        # jax aborts the whole process when it cannot reach the coordinator; look first.
        _wait_for_coordinator(coordinator_address, process_id, num_processes, timeout_seconds)
    try:
        jax.distributed.initialize(
            coordinator_address, num_processes, process_id,
            initialization_timeout=timeout_seconds,
        )  # fmt: skip
    except Exception as e:  # jax raises XlaRuntimeError (DEADLINE_EXCEEDED) among others
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(
            f"could not join the coordinator at {coordinator_address} as process "
            f"{process_id} of {num_processes} within {timeout_seconds}s ({first_line}). Start "
            "process 0 first, check the address and port, and use the same --num_processes "
            "everywhere."
        ) from None


def _wait_for_coordinator(address: str, process_id: int, num_processes: int, timeout: float):
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator_address={address!r} must be host:port, e.g. 10.0.0.1:1234.")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"could not join the coordinator at {address} as process {process_id} of "
                    f"{num_processes} within {timeout:g}s ({e}). Start process 0 first, and "
                    "check the address and port."
                ) from None
            time.sleep(0.25)


def assert_same_on_all_processes(text: str, what: str = "flags") -> None:
    """Raises ValueError on every process if `text` differs between processes."""
    if jax.process_count() == 1:
        return
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8).astype(np.int32)
    first = multihost_utils.broadcast_one_to_all(digest)
    same = np.asarray(multihost_utils.process_allgather(np.array_equal(first, digest)))
    if not same.all():
        mismatched = [int(i) for i in np.flatnonzero(~same.astype(bool))]
        raise ValueError(
            f"{what} differ between processes: processes {mismatched} disagree with process 0. "
            "Start every process with the same flags (only --process_id may differ)."
        )


def put(tree, sharding: NamedSharding):
    """Places host arrays with `sharding`; every process passes the same whole values."""

    def place(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(place, tree)
