r"""The GPT run on one CPU device against the CPU split into one device per core.

`jaxnet.training.parallel.split_cpu` makes the CPU that many devices before JAX starts, and
`experiments.gpt` trains over all of them (the batch split along the mesh). This measures
what that buys, in one process: the same `lm.build` on a mesh of the first device alone and
on a mesh of every device, the same params and data, timed in paired rounds interleaved
with the order alternating (`jaxnet.timing.interleaved_times`):

  chunk      a jitted training chunk of --chunk steps (the run's lax.scan), ms per step.
  estimate   one loss estimate: eval_iters * batch_size random windows of the val split.

The speedup is the median of the per-round ratios one / split, with its quartiles. Both
meshes compute the same losses (the first chunk's are compared).

  python -m benchmarks.cpu_split
  python -m benchmarks.cpu_split --devices=2 --rounds=12
"""

import os
import statistics
import sys
import time

from absl import app, flags

from jaxnet.training import parallel

_DEVICES = flags.DEFINE_integer("devices", 0, "CPU devices; 0: one per core (split_cpu).",
                                lower_bound=0)  # fmt: skip
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Paired rounds.", lower_bound=1)
_CHUNK = flags.DEFINE_integer("chunk", 50, "Training steps per timed chunk.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", "benchmarks/results/cpu_split.json", "The JSON.")


def measure(config, corpus, rounds: int, chunk: int) -> dict:
    """Times of the chunk and the estimate of `lm.build(config, ...)` on each mesh, and
    their paired ratios."""
    import jax
    import numpy as np

    from jaxnet import timing
    from jaxnet.training import lm

    runs, first = {}, {}
    for name, devices in (("one", jax.devices()[:1]), ("split", jax.devices())):
        mesh = parallel.make_mesh(devices)
        model, state = lm.build(config, corpus.vocab_size, mesh)
        train = jax.device_put(corpus.train, parallel.replicated(mesh))
        box = [state]

        def step(model=model, train=train, box=box):
            box[0], values = model.chunk(box[0], train, chunk)
            return values

        first[name] = np.asarray(step())
        params = jax.tree.map(jax.numpy.copy, box[0].params)  # the chunks donate theirs
        runs[f"chunk {name}"] = step
        runs[f"estimate {name}"] = lambda m=model, p=params: m.estimate(p, corpus.val, [0])
    order = [f"{what} {name}" for what in ("chunk", "estimate") for name in ("one", "split")]
    times = timing.interleaved_times({k: runs[k] for k in order}, repeats=rounds, warmup=1)
    results = {
        "devices": jax.device_count(),
        "chunk_steps": chunk,
        "rounds": rounds,
        "first_chunk_max_loss_diff": float(np.abs(first["one"] - first["split"]).max()),
    }
    for what, per in (("chunk", chunk), ("estimate", 1)):
        one, split = times[f"{what} one"], times[f"{what} split"]
        results[what] = {
            "one_ms": 1e3 * statistics.median(one) / per,
            "split_ms": 1e3 * statistics.median(split) / per,
            "speedup": timing.ratio_spread(one, split),
        }
    return results


def table(results: dict) -> str:
    rows = [["", "one device", f"{results['devices']} devices", "one / split [q1, q3]"],
            ["---"] * 4]  # fmt: skip
    for what, unit in (("chunk", "ms / step"), ("estimate", "ms / estimate")):
        r, s = results[what], results[what]["speedup"]
        rows.append([f"{what} ({unit})", f"{r['one_ms']:.1f}", f"{r['split_ms']:.1f}",
                     f"{s['median']:.3f} [{s['q1']:.3f}, {s['q3']:.3f}]"])  # fmt: skip
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv):
    del argv
    from jaxnet.training import lm

    batch = lm.GPTConfig().batch_size  # the run's batch, split over the devices
    devices = parallel.split_cpu(batch, _DEVICES.value)
    if devices is None or devices < 2:
        sys.exit(
            f"cpu_split: the CPU was not split ({devices} devices); run it with 2 or more "
            "cores, or --devices=2, and without --xla_force_host_platform_device_count."
        )
    from experiments import common
    from jaxnet import text
    from jaxnet.training import files

    common.quiet_jax_logs()
    start, load = time.perf_counter(), os.getloadavg()[0]
    config = lm.GPTConfig()
    results = measure(config, text.load(config.text), _ROUNDS.value, _CHUNK.value)
    results.update(seconds=time.perf_counter() - start, load_before=load,
                   load_after=os.getloadavg()[0], cpus=parallel.cpu_cores(),
                   command="python -m benchmarks.cpu_split " + " ".join(sys.argv[1:]),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))  # fmt: skip
    print(
        f"{results['cpus']} cores, load {load:.1f} before, {results['load_after']:.1f} after; "
        f"first chunk's losses differ by at most {results['first_chunk_max_loss_diff']:.1e}"
    )
    print(table(results))
    print(f"wrote {files.write_json_atomic(_OUTPUT.value, results)} in {results['seconds']:.0f}s")


if __name__ == "__main__":
    app.run(main)
