r"""Speed and memory of the hand-derived VJPs against autodiff, the GEMM floor and PyTorch.

Everything runs in one process, interleaved (A B A B ...), with block_until_ready; warm-up
and compilation are not timed, and each figure is a median of --repeats runs.

  python -m benchmarks.benchmark                              # every section
  python -m benchmarks.benchmark --sections=step,memory --repeats=20
  python -m benchmarks.benchmark --output_dir=benchmarks/results

Sections: step (one gradient step per mode against plain autodiff and the GEMM floor),
torch (PyTorch eager, when importable), lesson (lesson 001's 500-step run), epoch (a
train_mlp epoch on Fashion-MNIST-sized data against its matmul floor), memory (saved
residuals and compiled temporary bytes of the MLPs; attention, a GPT block stack and a
reversible stack against autodiff, with memory.png: see benchmarks/memory_bench.py),
profile (jax.profiler time by kind of op for the epoch and the batch-4096 step, with their
HLO in --output_dir/profile/), devices
(train_mlp on 1/2/4/8 simulated devices), layers (three networks of jaxnet.layers against
the same networks written in plain jax.numpy: paired timing, residuals, kernels; see
benchmarks/layer_bench.py).

The autodiff baseline ("plain") is the network as a user would write it in jax.numpy
(jaxnet.lessons.reference), differentiated by jax.grad; jaxnet's own grad="autodiff", which
goes through its checks, is a row of its own ("jaxnet_autodiff").

A run of some sections keeps the other sections' results already in --output_dir: it
merges into benchmark.json and rewrites benchmark.md from the merged results, noting when
each section last ran.
"""

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from jax._src.ad_checkpoint import saved_residuals

import jaxnet
from benchmarks import layer_bench, memory_bench
from experiments import common
from jaxnet import profiling
from jaxnet.lessons import reference
from jaxnet.timing import interleaved_medians
from jaxnet.training import data, files, loop

SECTIONS = ("step", "torch", "lesson", "epoch", "profile", "memory", "devices", "layers")
_SECTIONS = flags.DEFINE_list("sections", list(SECTIONS), f"Which of {list(SECTIONS)} to run.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed runs per figure (median).", lower_bound=3)
_LESSON_STEPS = flags.DEFINE_integer(
    "lesson_steps", 500, "SGD steps of lesson 001's run (--sections=lesson).", lower_bound=1
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/benchmark", "Where benchmark.json goes.")
_DEVICE_COUNTS = flags.DEFINE_list("device_counts", ["1", "2", "4", "8"], "For --sections=devices.")
_ROUNDS = flags.DEFINE_integer("rounds", 41, "Paired rounds per timed comparison in "
                               "--sections=layers,memory.", lower_bound=3)  # fmt: skip

# (sizes, batch) of lesson 001, the lessons' MNIST MLP, and a wide MLP at two batch sizes.
CONFIGS = [([1000, 100, 10], 64), ([784, 100, 10], 64), ([784, 800, 800, 10], 512),
           ([784, 800, 800, 10], 4096)]  # fmt: skip
LOSSES = ("cross_entropy", "mse")
MODES = ("fused", "plain", "ops", "jaxnet_autodiff", "forward_and_backward", "floor")
# jaxnet.mlp_loss's grad= for each mode that goes through it.
MLP_GRADS = {"fused": "fused", "ops": "ops", "jaxnet_autodiff": "autodiff"}


def _validate(sections):
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise flags.ValidationError(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}.")
    return True


flags.register_validator("sections", _validate)


def step_flops(sizes, batch) -> float:
    """Forward x@w, backward dW = x^T g and dX = g w^T (no dX for the data): 2*m*k*n each."""
    pairs = list(zip(sizes, sizes[1:]))
    macs = sum(3 * k * n for k, n in pairs) - sizes[0] * sizes[1]
    return 2.0 * batch * macs


def problem(sizes, batch, loss, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    params = jaxnet.init_mlp(keys[0], sizes)
    x = jax.random.normal(keys[1], (batch, sizes[0]))
    if loss == "cross_entropy":
        y = jax.random.randint(keys[2], (batch,), 0, sizes[-1])
    else:
        y = jax.random.normal(keys[2], (batch, sizes[-1]))
    return params, x, y


def gemm_floor(params, x, g_out):
    """The step's matrix products alone, nothing else: the floor any gradient step pays."""
    acts, outs = [x], []
    for layer in params[:-1]:
        acts.append(acts[-1] @ layer["w"])
    outs.append(acts[-1] @ params[-1]["w"])
    g = g_out
    for i in reversed(range(len(params))):
        outs.append(acts[i].T @ g)
        if i > 0:
            g = g @ params[i]["w"].T
    return outs, g


def step_functions(sizes, batch, loss):
    """Jitted zero-argument calls, one per mode, each returning the gradients."""
    params, x, y = problem(sizes, batch, loss)
    grad = {m: jax.jit(jax.grad(functools.partial(jaxnet.mlp_loss, loss=loss, grad=g)))
            for m, g in MLP_GRADS.items()}  # fmt: skip
    grad["plain"] = jax.jit(jax.grad(functools.partial(reference.mlp_loss, loss=loss)))
    grad = {m: grad[m] for m in MODES if m in grad}  # fused and plain run back to back
    fb = jax.jit(functools.partial(jaxnet.forward_and_backward, loss=loss))
    floor = jax.jit(gemm_floor)
    g_out = jnp.ones((batch, sizes[-1]))
    calls = {m: functools.partial(grad[m], params, x, y) for m in grad}
    calls["forward_and_backward"] = functools.partial(fb, params, x, y)
    calls["floor"] = functools.partial(floor, params, x, g_out)
    return calls


def section_step(repeats):
    rows = []
    for sizes, batch in CONFIGS:
        for loss in LOSSES:
            times = interleaved_medians(step_functions(sizes, batch, loss), repeats=repeats)
            flops = step_flops(sizes, batch)
            for mode in MODES:
                rows.append(dict(sizes=sizes, batch=batch, loss=loss, mode=mode,
                                 ms=1e3 * times[mode], gflops=flops / times[mode] / 1e9,
                                 vs_plain=times[mode] / times["plain"],
                                 floor_over_mode=times["floor"] / times[mode]))  # fmt: skip
    fused = [r["vs_plain"] for r in rows if r["mode"] == "fused"]
    big = [r["floor_over_mode"] for r in rows if r["mode"] == "fused" and r["batch"] >= 512]
    targets = {
        "fused/plain median (<= 1.0)": statistics.median(fused),
        "fused/plain max (<= 1.05)": max(fused),
        "floor/fused min at batch >= 512 (>= 0.90)": min(big),
    }
    return rows, targets


# ---------------------------------------------------------------------------- PyTorch


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def torch_step_calls(torch, sizes, batch, loss, seed=0):
    """Eager autograd steps: nn.Linear + ReLU, and the same with a custom Function MyReLU."""

    class MyReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * (x > 0)

    torch.manual_seed(seed)
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
    x = torch.randn(batch, sizes[0])
    y = (
        torch.randint(0, sizes[-1], (batch,))
        if loss == "cross_entropy"
        else torch.randn(batch, sizes[-1])
    )
    criterion = (
        torch.nn.functional.cross_entropy
        if loss == "cross_entropy"
        else torch.nn.functional.mse_loss
    )

    def step(relu):
        h = x
        for layer in layers[:-1]:
            h = relu(layer(h))
        value = criterion(layers[-1](h), y)
        for layer in layers:
            layer.zero_grad(set_to_none=True)
        value.backward()
        return value

    return {"torch_autograd": lambda: step(torch.relu), "torch_myrelu": lambda: step(MyReLU.apply)}


def section_torch(repeats):
    torch = _torch()
    if torch is None:
        return {"skipped": "torch is not importable (pip install torch==2.13.0 to compare)"}
    rows = []
    for sizes, batch in CONFIGS:
        for loss in LOSSES:
            calls = {**torch_step_calls(torch, sizes, batch, loss),
                     "fused": step_functions(sizes, batch, loss)["fused"]}  # fmt: skip
            times = interleaved_medians(calls, repeats=repeats)
            for mode, t in times.items():
                rows.append(dict(sizes=sizes, batch=batch, loss=loss, mode=mode, ms=1e3 * t,
                                 fused_over_mode=times["fused"] / t))  # fmt: skip
    return {"rows": rows, "torch": torch.__version__, "threads": torch.get_num_threads()}


# -------------------------------------------------------------------- lesson 001's run


def numpy_lesson(dtype, steps=500, lr=1e-6, seed=0):
    """Lesson 001's numpy loop, as written there."""
    rng = np.random.default_rng(seed)
    x, y = (
        rng.standard_normal((64, 1000)).astype(dtype),
        rng.standard_normal((64, 10)).astype(dtype),
    )
    w1, w2 = (
        rng.standard_normal((1000, 100)).astype(dtype),
        rng.standard_normal((100, 10)).astype(dtype),
    )
    for _ in range(steps):
        h = x.dot(w1)
        h_relu = np.maximum(h, 0)
        y_pred = h_relu.dot(w2)
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.T.dot(grad_y_pred)
        grad_h = grad_y_pred.dot(w2.T)
        grad_h[h < 0] = 0
        grad_w1 = x.T.dot(grad_h)
        w1 -= lr * grad_w1
        w2 -= lr * grad_w2
    return w1


def torch_lesson(torch, steps=500, lr=1e-6):
    x, y = torch.randn(64, 1000), torch.randn(64, 10)
    w1 = torch.randn(1000, 100, requires_grad=True)
    w2 = torch.randn(100, 10, requires_grad=True)
    for _ in range(steps):
        loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            w1 -= lr * w1.grad
            w2 -= lr * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    return w1


def section_lesson(repeats, steps=500):
    params, x, _ = problem([1000, 100, 10], 64, "mse")
    params = [{"w": layer["w"]} for layer in params]
    y = jax.random.normal(jax.random.key(9), (64, 10))
    loss_and_grad = functools.partial(jaxnet.forward_and_backward, loss="sum_squares")
    sgd = loop.hand_sgd(1e-6)
    run = jax.jit(lambda p: loop.fit_full_batch(loss_and_grad, p, (x, y), sgd, steps))
    calls = {"jaxnet_scan": lambda: run(params),
             "numpy_float64": lambda: numpy_lesson(np.float64, steps),
             "numpy_float32": lambda: numpy_lesson(np.float32, steps)}  # fmt: skip
    torch = _torch()
    if torch is not None:
        calls["torch_eager"] = lambda: torch_lesson(torch, steps)
    times = interleaved_medians(calls, repeats=repeats, warmup=1)
    ratios = {f"jaxnet_scan/{k}": times["jaxnet_scan"] / t for k, t in times.items()}
    return {"ms": {k: 1e3 * t for k, t in times.items()}, "ratios": ratios, "steps": steps}


# ---------------------------------------------------------------------- a train epoch


def _fashion_sized():
    try:
        ds = data.load("fashion_mnist", download_ok=False)
        norm = data.fit_normalizer(ds.x_train)
        return norm(ds.x_train), ds.y_train, "fashion_mnist"
    except data.DataError:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((60000, 784)).astype(np.float32)
        return x, rng.integers(0, 10, 60000).astype(np.int32), "random 60000x784"


def epoch_floor(sizes, batch_size, n):
    """A jitted scan of just the epoch's matrix products, batch by batch."""
    batches = loop.batches_per_epoch(n, batch_size)

    def run(params, x):
        g = jnp.ones((batch_size, sizes[-1]))

        def body(carry, i):
            xb = jax.lax.dynamic_slice_in_dim(x, i * batch_size % (n - batch_size), batch_size)
            outs, dx = gemm_floor(params, xb, g)
            return carry + sum(o.sum() for o in outs) + dx.sum(), None

        return jax.lax.scan(body, 0.0, jnp.arange(batches))[0]

    return jax.jit(run)


def torch_epoch(torch, sizes, x, y, batch_size, lr=1e-3):
    """The same epoch in PyTorch eager: shuffle, flip, label smoothing 0.1, AdamW."""
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
    params = [p for layer in layers for p in layer.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    x, y = torch.from_numpy(x), torch.from_numpy(y).long()

    def epoch():
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            images = x[idx].view(len(idx), 28, 28)
            flip = torch.rand(len(idx), 1, 1) < 0.5
            h = torch.where(flip, images.flip(-1), images).view(len(idx), -1)
            for layer in layers[:-1]:
                h = torch.relu(layer(h))
            loss = torch.nn.functional.cross_entropy(layers[-1](h), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return epoch


EPOCH_SIZES, EPOCH_BATCH = [784, 512, 512, 10], 128


def epoch_calls(sizes=EPOCH_SIZES, batch_size=EPOCH_BATCH):
    """(source, {name: (jitted, args)}): train_mlp's Fashion-MNIST epoch and its floor.

    The epoch is train_mlp's default for fashion_mnist: AdamW with weight decay 0.05 on a
    cosine schedule, label smoothing 0.1 and the flip augmentation.
    """
    x, y, source = _fashion_sized()
    params = jaxnet.init_mlp(jax.random.key(0), sizes)
    steps = loop.batches_per_epoch(len(x), batch_size)
    opt = loop.make_training_optimizer("adamw", 1e-3, "cosine", 24 * steps, 0.05)
    loss = functools.partial(jaxnet.mlp_loss, loss="cross_entropy", grad="fused",
                             label_smoothing=0.1)  # fmt: skip
    epoch = loop.make_train_epoch(loss, opt, batch_size, augment=data.random_flip)
    state = loop.init_state(params, opt, jax.random.key(1))
    xd, yd = jax.device_put(x), jax.device_put(y)
    floor = epoch_floor(sizes, batch_size, len(x))
    return source, {
        "train_epoch": (epoch.jitted, (state, xd, yd)),
        "epoch_floor": (floor, (params, xd)),
    }


def section_epoch(repeats, sizes=EPOCH_SIZES, batch_size=EPOCH_BATCH):
    source, jitted = epoch_calls(sizes, batch_size)
    calls = {name: functools.partial(f, *args) for name, (f, args) in jitted.items()}
    torch = _torch()
    if torch is not None:
        x, y = (np.asarray(a) for a in jitted["train_epoch"][1][1:])
        calls["torch_eager_epoch"] = torch_epoch(torch, sizes, x, y, batch_size)
    times = interleaved_medians(calls, repeats=max(3, repeats // 3), warmup=1)
    return {"data": source, "sizes": sizes, "batch_size": batch_size,
            "seconds": times, "epoch_over_floor": times["train_epoch"] / times["epoch_floor"],
            **({"epoch_over_torch": times["train_epoch"] / times["torch_eager_epoch"]}
               if "torch_eager_epoch" in times else {})}  # fmt: skip


# --------------------------------------------------------------------------- profile


def section_profile(output_dir: Path):
    """jax.profiler traces of the missed targets, op time summed by kind; HLO text saved.

    The epoch against its floor, and the steps of the worst fused/autodiff configuration
    (1000-100-10, mse, batch 64) and of the batch-4096 floor comparison.
    """
    runs = {name: (f, args, 3) for name, (f, args) in epoch_calls()[1].items()}
    for sizes, batch, loss in (
        ([1000, 100, 10], 64, "mse"),
        ([784, 800, 800, 10], 4096, "cross_entropy"),
    ):
        params, x, y = problem(sizes, batch, loss)
        tag = f"{'-'.join(map(str, sizes))}_{batch}_{loss}"
        for mode in ("fused", "autodiff"):
            f = jax.jit(jax.grad(functools.partial(jaxnet.mlp_loss, loss=loss, grad=mode)))
            runs[f"step_{mode}_{tag}"] = (f, (params, x, y), 20)
        g_out = jnp.ones((batch, sizes[-1]))
        runs[f"step_floor_{tag}"] = (jax.jit(gemm_floor), (params, x, g_out), 20)
    rows = []
    for name, (jitted, args, calls) in runs.items():
        hlo, ms = profiling.time_by_kind(jitted, *args, calls=calls)
        files.write_bytes_atomic(output_dir / "profile" / f"{name}.hlo.txt", hlo.encode())
        rows.append({"run": name, "calls": calls, "ms": ms})
    return rows


# ---------------------------------------------------------------------------- memory


def _bytes(avals) -> int:
    return int(sum(np.prod(a.shape) * a.dtype.itemsize for a in avals))


def section_memory(output_dir: Path, rounds: int) -> dict:
    """{"mlp": residual and temp bytes of the MLPs, then memory_bench's attention, GPT and
    reversible rows and targets}; writes memory.png (temp against T and depth)."""
    results = {"mlp": mlp_memory(), **memory_bench.section(rounds)}
    results["plot"] = Path(memory_bench.plot(results, output_dir / "memory.png")).name
    return results


def mlp_memory():
    rows = []
    for sizes, batch in CONFIGS:
        for loss in LOSSES:
            params, x, y = problem(sizes, batch, loss)
            row = dict(sizes=sizes, batch=batch, loss=loss)
            losses = {m: functools.partial(jaxnet.mlp_loss, loss=loss, grad=g)
                      for m, g in MLP_GRADS.items()}  # fmt: skip
            losses["plain"] = functools.partial(reference.mlp_loss, loss=loss)
            for mode, f in losses.items():
                saved = saved_residuals(f, params, x, y)
                row[f"{mode}_residual_bytes"] = _bytes(
                    a for a, why in saved if "argument" not in why
                )
                row[f"{mode}_residual_count"] = sum("argument" not in why for _, why in saved)
                compiled = jax.jit(jax.grad(f)).lower(params, x, y).compile()
                row[f"{mode}_temp_bytes"] = int(compiled.memory_analysis().temp_size_in_bytes)
            row["fused/plain residuals"] = row["fused_residual_bytes"] / row["plain_residual_bytes"]
            row["fused/plain temp"] = row["fused_temp_bytes"] / max(row["plain_temp_bytes"], 1)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- devices


def section_devices():
    """train_mlp's digits run on N simulated CPU devices; they share the same cores."""
    rows = []
    root = Path(__file__).resolve().parents[1]
    for count in [int(c) for c in _DEVICE_COUNTS.value]:
        with tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "PYTHONPATH": str(root),
                   "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"}  # fmt: skip
            cmd = [sys.executable, "-m", "experiments.train_mlp", "--dataset=digits", "--epochs=3",
                   "--batch_size=64", "--seed=3", f"--output_dir={out}"]  # fmt: skip
            subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True, timeout=600)
            summary = json.loads(Path(out, "summary.json").read_text())
            last = [
                json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()
            ][-1]
        rows.append(dict(devices=summary["devices"], test_loss=summary["test_loss"],
                         wall_seconds=summary["wall_seconds"],
                         samples_per_second=last["samples_per_second"]))  # fmt: skip
    return rows


# --------------------------------------------------------------------------- report


def _table(title, header, rows) -> list[str]:
    """A markdown table under its title, as lines."""
    lines = ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def report(results) -> str:
    """Every section in results as markdown tables."""
    out = []
    if "step" in results:
        out += _table("gradient step (median ms; ratios in the same process; plain: jax.grad "
                      "of a hand-written jax.numpy MLP)",
                      ["sizes", "batch", "loss", "mode", "ms", "GFLOP/s", "/plain", "floor/mode"],
                      [["-".join(map(str, r["sizes"])), str(r["batch"]), r["loss"], r["mode"],
                        f"{r['ms']:.3f}", f"{r['gflops']:.1f}", f"{r['vs_plain']:.3f}",
                        f"{r['floor_over_mode']:.3f}"]
                       for r in results["step"]["rows"]])  # fmt: skip
        for k, v in results["step"]["targets"].items():
            out.append(f"- {k}: {v:.3f}")
    if "torch" in results:
        t = results["torch"]
        if "skipped" in t:
            out.append(f"\n## PyTorch eager: skipped, {t['skipped']}")
        else:
            out += _table(f"PyTorch {t['torch']} eager, {t['threads']} threads (median ms)",
                          ["sizes", "batch", "loss", "mode", "ms", "fused/mode"],
                          [["-".join(map(str, r["sizes"])), str(r["batch"]), r["loss"], r["mode"],
                            f"{r['ms']:.3f}", f"{r['fused_over_mode']:.3f}"]
                           for r in t["rows"]])  # fmt: skip
    if "lesson" in results:
        lesson = results["lesson"]
        steps = lesson.get("steps", 500)
        out += _table(f"lesson 001, {steps} steps (median ms)", ["run", "ms", "jaxnet_scan/run"],
                      [[k, f"{v:.1f}", f"{lesson['ratios']['jaxnet_scan/' + k]:.3f}"]
                       for k, v in lesson["ms"].items()])  # fmt: skip
    if "epoch" in results:
        e = results["epoch"]
        out += _table(f"one train_mlp epoch, {e['data']}, {'-'.join(map(str, e['sizes']))}, "
                      f"batch {e['batch_size']} (median s)", ["run", "s"],
                      [[k, f"{v:.3f}"] for k, v in e["seconds"].items()])  # fmt: skip
        out.append(f"- epoch/floor: {e['epoch_over_floor']:.3f}")
        if "epoch_over_torch" in e:
            out.append(f"- epoch/torch eager epoch: {e['epoch_over_torch']:.3f}")
    if "profile" in results:
        kinds = ["matmul", "elementwise", "gather", "shuffle", "copy", "total ops", "wall"]
        out += _table("profile: jax.profiler op time by kind, mean per call (ms; ops may overlap)",
                      ["run", *kinds],
                      [[r["run"], *(f"{r['ms'].get(k, 0.0):.2f}" for k in kinds)]
                       for r in results["profile"]])  # fmt: skip
    if "memory" in results:
        memory = results["memory"]
        mlp = memory["mlp"] if isinstance(memory, dict) else memory  # older runs: a list
        out += _table("memory: residuals saved for the backward (beyond the arguments), "
                      "compiled temporaries (bytes)",
                      ["sizes", "batch", "loss", "fused res", "ops res", "jaxnet_autodiff res",
                       "plain res", "fused/plain res", "fused temp", "plain temp",
                       "fused/plain temp"],
                      [["-".join(map(str, r["sizes"])), str(r["batch"]), r["loss"],
                        str(r["fused_residual_bytes"]), str(r["ops_residual_bytes"]),
                        str(r["jaxnet_autodiff_residual_bytes"]), str(r["plain_residual_bytes"]),
                        f"{r['fused/plain residuals']:.3f}", str(r["fused_temp_bytes"]),
                        str(r["plain_temp_bytes"]), f"{r['fused/plain temp']:.3f}"]
                       for r in mlp])  # fmt: skip
        if isinstance(memory, dict):
            for title, header, rows in memory_bench.tables(memory):
                out += _table(f"memory: {title}", header, rows)
            out += ["", f"![memory against T and depth]({Path(memory['plot']).name})", ""]
            out += memory_bench.target_lines(memory)
    if "devices" in results:
        out += _table("train_mlp digits, 3 epochs, batch 64, on N simulated CPU devices "
                      "(they share the same cores: not faster)",
                      ["devices", "test loss", "wall s", "samples/s (last epoch)"],
                      [[str(r["devices"]), f"{r['test_loss']:.6f}", f"{r['wall_seconds']:.2f}",
                        f"{r['samples_per_second']:,.0f}"]
                       for r in results["devices"]])  # fmt: skip
    if "layers" in results:
        out += _table(
            "layers: a value_and_grad step of jaxnet.layers networks against the same "
            "network in plain jax.numpy under jax.grad (paired interleaved rounds; "
            "kernels and dots read from the compiled HLO)",
            *layer_bench.table(results["layers"]),
        )
        out += layer_bench.work_lines(results["layers"]) + layer_bench.target_lines(
            results["layers"]
        )
    return "\n".join(out)


def _command() -> str:
    return "python -m benchmarks.benchmark " + " ".join(sys.argv[1:])


def merge(path: Path, results: dict, sections, command: str) -> dict:
    """The results already at `path` with this run's sections replacing theirs.

    "runs" records, per section, the command, date and machine of the run it comes from.
    """
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = {**old, **{name: results[name] for name in sections}}
    run = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": results["machine"], "repeats": results["repeats"],
           "load_average": results["load_average"]}  # fmt: skip
    runs = old.get("runs", {name: {"command": "an earlier run", "machine": old.get("machine")}
                            for name in SECTIONS if name in old})  # fmt: skip
    merged["runs"] = {**runs, **{name: run for name in sections}}
    merged["machine"], merged["repeats"] = results["machine"], results["repeats"]
    merged["seconds"] = results["seconds"]
    return merged


def markdown(results: dict) -> str:
    """benchmark.md: where each section comes from, then every table."""
    lines = ["# jaxnet benchmark (`python -m benchmarks.benchmark`)", ""]
    for name in SECTIONS:
        if name in results.get("runs", {}):
            run = results["runs"][name]
            machine = run.get("machine") or {}
            lines.append(f"- {name}: `{run['command']}`, {run.get('date', 'date not recorded')}, "
                         f"{machine.get('backend', '?')} with {machine.get('cpus', '?')} CPUs, "
                         f"jax {machine.get('jax', '?')}"
                         + (f", load average {run['load_average'][0]:.1f} at the start"
                            if "load_average" in run else ""))  # fmt: skip
    return "\n".join(lines) + "\n" + report(results) + "\n"


def main(argv):
    del argv
    common.quiet_jax_logs()
    sections, repeats = _SECTIONS.value, _REPEATS.value
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "backend": jax.default_backend(), "devices": jax.device_count(),
                           "jax": jax.__version__, "optax": optax.__version__},
               "repeats": repeats, "load_average": os.getloadavg()}  # fmt: skip
    start = time.perf_counter()
    if "step" in sections:
        rows, targets = section_step(repeats)
        results["step"] = {"rows": rows, "targets": targets}
    runners = {"torch": lambda: section_torch(repeats),
               "lesson": lambda: section_lesson(repeats, _LESSON_STEPS.value),
               "layers": lambda: layer_bench.section(_ROUNDS.value),
               "epoch": lambda: section_epoch(repeats),
               "profile": lambda: section_profile(Path(_OUTPUT_DIR.value)),
               "memory": lambda: section_memory(Path(_OUTPUT_DIR.value), _ROUNDS.value),
               "devices": section_devices}  # fmt: skip
    for name, runner in runners.items():
        if name in sections:
            results[name] = runner()
    results["seconds"] = time.perf_counter() - start
    print(report(results))
    output_dir = Path(_OUTPUT_DIR.value)
    merged = merge(output_dir / "benchmark.json", results, sections, _command())
    path = files.write_json_atomic(output_dir / "benchmark.json", merged)
    files.write_bytes_atomic(output_dir / "benchmark.md", markdown(merged).encode())
    print(f"\nwrote {path} and benchmark.md beside it in {results['seconds']:.0f}s")


if __name__ == "__main__":
    app.run(main)
