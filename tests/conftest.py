"""Shared test helpers, and the settings that keep the suite fast.

The suite compiles hundreds of small XLA programs and runs each a few times, so compiling
is most of its time. Two settings, made here before JAX starts its backend (XLA reads
XLA_FLAGS then, not at import), cut it; set JAXNET_TEST_DEFAULT_XLA=1 for neither:

- XLA:CPU flags that compile the suite's small programs 2 to 9 times faster (in CPU time):
  no LLVM optimization (level 0), the classic loop emitters instead of the MLIR fusion
  emitters, and no splitting of a program for parallel codegen. They change how the
  programs are compiled, not what they compute; a probe keeps only the flags this jaxlib
  knows (an unknown flag in XLA_FLAGS aborts the process).
- A persistent compilation cache in a temporary folder of this run, shared by the
  pytest-xdist workers and every subprocess the tests start (the training command,
  the experiments): a program compiled once is loaded, not compiled again, wherever the
  same program comes up again in this run (a new closure around the same computation).
  The folder is removed when the run ends.

Both are passed on by environment variables, so the xdist workers and the subprocesses
inherit them from the process that first loads this file.
"""

import atexit
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from absl import flags

import jaxnet
from jaxnet import gradcheck

FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0",
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_cpu_parallel_codegen_split_count=1",
)
_SET_UP = "JAXNET_TEST_SETUP"  # set once the first process has made the settings below
_CACHE = "JAXNET_TEST_JAX_CACHE"  # the cache folder made for this run


def _jaxlib_takes(flags: str) -> bool:
    """Whether XLA starts with these XLA_FLAGS: a subprocess tries, once per jaxlib version
    and flags (its answer is kept in a file of the temporary folder)."""
    key = f"{sys.executable} {importlib.metadata.version('jaxlib')} {flags}"
    answer = Path(tempfile.gettempdir(), "jaxnet-tests-xla-flags",
                  hashlib.sha256(key.encode()).hexdigest()[:16])  # fmt: skip
    if not answer.is_file():
        try:
            probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"],
                                   env={**os.environ, "XLA_FLAGS": flags}, capture_output=True,
                                   timeout=120)  # fmt: skip
        except subprocess.SubprocessError:  # a timeout: no answer to keep
            return False
        answer.parent.mkdir(exist_ok=True)
        answer.write_text("yes" if probe.returncode == 0 else "no")
    return answer.read_text() == "yes"


def _xla_flags_this_jaxlib_takes(existing: str) -> str:
    """existing XLA_FLAGS plus those FAST_COMPILE_FLAGS it does not set and jaxlib knows."""
    wanted = [f for f in FAST_COMPILE_FLAGS if f.split("=")[0] + "=" not in existing]
    for chosen in (wanted, wanted[:1]):  # all, then the one every jaxlib has
        candidate = " ".join([existing, *chosen]).strip()
        if chosen and _jaxlib_takes(candidate):
            return candidate
    return existing


def _fast_settings() -> None:
    if os.environ.get(_SET_UP) or os.environ.get("JAXNET_TEST_DEFAULT_XLA"):
        return
    os.environ[_SET_UP] = "1"
    os.environ["XLA_FLAGS"] = _xla_flags_this_jaxlib_takes(os.environ.get("XLA_FLAGS", ""))
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # else the user's cache, as it is
        folder = tempfile.mkdtemp(prefix="jaxnet-tests-jax-cache-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ.update({
            _CACHE: folder,
            "JAX_COMPILATION_CACHE_DIR": folder,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        })  # fmt: skip


_fast_settings()
if os.environ.get(_CACHE):  # this process imported jax before the variables were set
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# Experiment scripts define absl flags; tests set them with flagsaver, never via sys.argv.
flags.FLAGS.mark_as_parsed()

# Whole files of end-to-end runs: `pytest -m "not slow"` is the inner loop without them.
# (Files outside this set mark their own sweeps `slow`, test by test.)
SLOW_FILES = {
    "test_experiments.py",
    "test_parallel.py",
    "test_kill_and_resume.py",
    "test_train_mlp.py",
    "test_lock.py",
    "test_profiling.py",
    "test_readme.py",
    "test_interop.py",
    "test_makemore.py",
    "test_trainer.py",
}


def pytest_configure(config):
    """Hypothesis draws the same examples on every run (seeded by each test), so that a run's
    shapes, and with them its compiles and its time, do not vary; HYPOTHESIS_PROFILE=explore
    draws new ones. (Not in an xdist controller, which runs no test: importing hypothesis
    there would delay the workers' start.)"""
    if not hasattr(config, "workerinput") and config.getoption("dist", "no") != "no":
        return
    import hypothesis

    hypothesis.settings.register_profile("deterministic", derandomize=True)
    hypothesis.settings.register_profile("explore", derandomize=False)
    hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


# Explicit tolerances for hand-vs-automatic gradients, per dtype.
TOLERANCES = {
    "float64": dict(rtol=1e-10, atol=1e-12),
    "float32": dict(rtol=2e-5, atol=1e-6),
}
LOSSES = ("mse", "sum_squares", "cross_entropy")
GRADS = ("fused", "ops", "autodiff")


def assert_trees_close(got, want, *, rtol, atol, err_msg=""):
    """Leaf by leaf, named by path: |got - want| <= rtol |want| + atol max(1, max|want leaf|).

    `gradcheck.compare`'s test, with the tolerances always explicit and err_msg (the mode,
    the dtype) heading its table. atol is scaled to each leaf's magnitude, never a bare
    absolute tolerance on large values; below 1 it stays atol, since the tests' inputs are
    of order 1 and a cancelling sum (batch_norm's dx at batch 2) keeps a rounding error of
    order atol however small its result."""
    __tracebackhide__ = True
    report = gradcheck.compare(got, want, rtol=rtol, atol=atol)
    if not report.ok:
        raise AssertionError(f"{err_msg}\n{report}".strip())


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    """Runs a test in float64 (inside jax.enable_x64) and in float32."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield request.param
    else:
        yield request.param


def away_from_zero(key, params, scale=0.1):
    """Adds noise to every leaf, biases included: a zero init can hide a wrong backward."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [p + scale * jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)]
    )


def make_problem(sizes, batch, loss, dtype, seed=0, bias=True):
    """(params moved away from zero, x, y) for an MLP of `sizes` and the named loss."""
    keys = jax.random.split(jax.random.key(seed), 4)
    params = jaxnet.init_mlp(keys[0], sizes, init="kaiming_normal", bias=bias, dtype=dtype)
    params = away_from_zero(keys[1], params)
    x = jax.random.normal(keys[2], (batch, sizes[0]), dtype)
    if loss == "cross_entropy":
        y = jax.random.randint(keys[3], (batch,), 0, sizes[-1])
    else:
        y = jax.random.normal(keys[3], (batch, sizes[-1]), dtype)
    return params, x, y


def as_dtype(tree, dtype):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Marks the tests of SLOW_FILES `slow`. Under `--dist loadgroup`, the tests that share a
    module-scoped fixture of their file (a training run, a subprocess) run on one worker, so
    that it is made once, not once per worker; tests that already name a group keep theirs."""
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
        if not item.get_closest_marker("xdist_group"):
            group = _module_fixture(item)
            if group:
                item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}::{group}"))


def _module_fixture(item) -> str | None:
    """The name of a module-scoped fixture of the item's own file that it uses, if any."""
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(info, "names_closure", ()):
        fixture = (info.name2fixturedefs.get(name) or [None])[-1]
        if (fixture is not None and fixture.scope == "module"
                and fixture.func.__module__ == item.module.__name__):  # fmt: skip
            return name
    return None


def cpu_env(devices: int | None = None, **extra: str) -> dict:
    """os.environ for a subprocess on the CPU alone: the suite's XLA_FLAGS with no device
    count of the caller's (nor JAX_NUM_CPU_DEVICES), plus `devices` simulated devices."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if devices is not None:
        kept.append(f"--xla_force_host_platform_device_count={devices}")
    env = {**os.environ, "XLA_FLAGS": " ".join(kept), "JAX_PLATFORMS": "cpu", **extra}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    return env
