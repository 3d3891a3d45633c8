"""The transform checks: the hand VJP under vmap, scan, checkpoint and jit, per example.

Each example b has the same primals and its own cotangent u_b; the plain hand VJP of every
u_b (one `lax.map` in the battery) is what each transformed VJP must give back: stacked per
example, or summed over the examples for the arguments that carry no batch axis.
"""

import jax
import jax.numpy as jnp

from jaxnet.gradcheck._trees import flat, vjp_of

TRANSFORMS = ("jit", "vmap", "vmap_of_grad", "grad_of_vmap", "scan", "checkpoint")
BATCH = 2  # examples per transform check; each gets its own cotangent


def _batched_axes(args, spec):
    if spec.batch_argnums is None:
        return tuple(0 for _ in args)
    return tuple(0 if i in spec.batch_argnums else None for i in range(len(args)))


def _stack_flat(lists):
    return [None if xs[0] is None else jnp.stack(xs) for xs in zip(*lists)]


def check(f, args, us, cots, spec, notes, pairs):
    """Adds (got, want) for each of spec.transforms to pairs; per example, as flat leaves."""
    axes = _batched_axes(args, spec)
    stacked = tuple(
        a if ax is None else jax.tree_util.tree_map(lambda x: jnp.stack([x] * BATCH), a)
        for a, ax in zip(args, axes)
    )
    each = [cots[f"example{b}"] for b in range(BATCH)]
    per_example = _stack_flat(each)
    leaf_axes = [ax for a, ax in zip(args, axes) for _ in jax.tree_util.tree_leaves(a)]
    summed = [p if ax == 0 or p is None else jnp.sum(p, 0) for p, ax in zip(per_example, leaf_axes)]
    hand_vjp = jax.vjp(f, *args)[1]

    def batched_f(*a):
        return jax.vmap(f, in_axes=axes)(*a)

    def scanned_f(*a):
        def step(carry, batched):
            merged = [b if ax == 0 else x for b, x, ax in zip(batched, a, axes)]
            return carry, f(*merged)

        xs = [x if ax == 0 else None for x, ax in zip(a, axes)]
        return jax.lax.scan(step, None, xs)[1]

    u0 = jax.tree_util.tree_map(lambda x: x[0], us)
    checks = {
        "vmap": lambda: (flat(jax.vmap(hand_vjp)(us)), per_example),
        "vmap_of_grad": lambda: (
            flat(jax.vmap(lambda a, c: vjp_of(f)(a, c), in_axes=(axes, 0))(stacked, us)),
            per_example,
        ),
        "grad_of_vmap": lambda: (flat(vjp_of(batched_f)(stacked, us)), summed),
        "scan": lambda: (flat(vjp_of(scanned_f)(stacked, us)), summed),
        "checkpoint": lambda: (flat(vjp_of(jax.checkpoint(f))(args, u0)), each[0]),
        "jit": lambda: (each[0], None),  # compared on the host with an eager run
    }
    for name in spec.transforms:
        notes.attempt(name, checks[name], pairs)
    pairs["jit_cotangent"] = (flat(u0), None)
