"""Data parallelism on JAX's own sharding: one mesh axis, "data", that batches are split along.

Params and optimizer state are replicated on every device; each global batch is sharded
along "data", so each device runs the (hand-derived) backward on its slice and XLA's SPMD
partitioner adds the all-reduce of the gradients. No pmap and no hand-written communication:
a global batch means the same on 1 device as on 8, and across several processes.
"""

import hashlib
import os
import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnet import _checks

AXIS = "data"


def cpu_cores() -> int:
    """The cores this process may run on: its CPU affinity, within a cgroup v2 CPU quota
    (a container limited to 2 CPUs of a larger machine counts 2)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as limits:
            quota, period = limits.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):  # no cgroup v2 quota
        pass
    return cores


def split_cpu(batch_size: int, devices: int = 0) -> int | None:
    """Before JAX starts: the CPU as `devices` devices, so that the mesh splits batches of
    `batch_size` over the cores.

    XLA runs one CPU device's program an operation at a time, each split over the cores;
    a small model's operations are too small to split well, so a core idles much of the
    time (a GPT of width 128 on 2 cores: the second one about half). One device per core,
    each running its share of the batch, keeps them busier: on 2 cores the GPT's step is
    about 1.1x and a loss estimate about 1.4x faster (`python -m benchmarks.cpu_split`;
    not measured on more cores).

    Args:
      batch_size: the global batch, which must split evenly over the devices.
      devices: how many; 0 for one per core (`cpu_cores`), as many as divide batch_size.

    Returns:
      The device count set; None where devices=0 and the count was already chosen:
      XLA_FLAGS sets --xla_force_host_platform_device_count, jax_num_cpu_devices was set
      (or JAX_NUM_CPU_DEVICES), or JAX's backends have started (call this before any array
      is made).

    Raises:
      ValueError: batch_size is not a positive int; devices is negative or does not divide
        batch_size; or devices > 0 and another count was already chosen.
    """
    batch_size = _checks.positive_int(batch_size, "batch_size")
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 0:
        raise ValueError(f"devices={devices!r} must be an int >= 0 (0: one per core).")
    if devices:
        _check_split(batch_size, devices)
        if devices == getattr(jax.config, "jax_num_cpu_devices", None):
            return devices  # asked for what is set already
    chosen = _cpu_devices_chosen()
    if chosen and devices:
        raise ValueError(f"cannot split the CPU into {devices} devices: {chosen}.")
    if chosen:
        return None
    devices = devices or max(d for d in range(1, cpu_cores() + 1) if batch_size % d == 0)
    jax.config.update("jax_num_cpu_devices", devices)
    return devices


def _cpu_devices_chosen() -> str:
    """Why the CPU's device count can no longer be set here, or ""."""
    from jax._src import xla_bridge  # no public way to ask whether the backends started

    if "--xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return "XLA_FLAGS sets --xla_force_host_platform_device_count; drop one of the two"
    if not hasattr(jax.config, "jax_num_cpu_devices"):
        return (f"jax {jax.__version__} has no jax_num_cpu_devices option; set "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N instead")  # fmt: skip
    if jax.config.jax_num_cpu_devices >= 0:
        return (f"jax_num_cpu_devices (or JAX_NUM_CPU_DEVICES) is set already, to "
                f"{jax.config.jax_num_cpu_devices}; drop one of the two")  # fmt: skip
    if xla_bridge.backends_are_initialized():
        return "JAX has started its devices already; split the CPU before making any array"
    return ""


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
    _check_split(batch_size, mesh.size)


def _check_split(batch_size: int, devices: int) -> None:
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
