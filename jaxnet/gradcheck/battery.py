"""Every comparison of `gradcheck.check`, traced into one jitted program per shape.

The program draws its random cotangents and directions from one key and returns pairs
(got, want) of flat leaf lists, non-floating leaves as None; the host compares them. A
check whose tracing raises is recorded as failed (or, for forward mode through a
custom_vjp, as skipped) in `notes`, filled while the program traces, per signature.
"""

import copy
import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet.gradcheck import fd, gates
from jaxnet.typing import PyTree

ORACLES_2 = ("rev_over_rev", "fwd_over_rev")
TRANSFORMS = ("jit", "vmap", "vmap_of_grad", "grad_of_vmap", "scan", "checkpoint")
BATCH = 2  # examples per transform check; each gets its own cotangent
SCALE = 8.0  # a power of two: vjp(8 u) = 8 vjp(u) holds to the last bit
# The program runs once per shape: compile time dominates. XLA's backend optimisations and
# its CPU fusion emitters about double it for no gain here (same verdicts; measured on the
# layernorm battery at order 2, 2 loaded cores: 4.4-6.0 s at level 0 alone, 2.5-3.1 s).
COMPILER_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
    "xla_llvm_disable_expensive_passes": True,
}


class Spec(NamedTuple):
    """What the program computes: static, part of the cache key."""

    order: int
    transforms: tuple[str, ...]
    batch_argnums: tuple[int, ...] | None  # None: every argument gets the batch axis
    contract: bool = True
    finite_differences: bool = True
    fd_float64: bool = True  # False once a float64 region failed to lower (say, PRNG bits)


class TraceFailure(Exception):
    """The hand VJP itself does not trace; the caller retries without jit."""


def is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def flat(tree: PyTree) -> list:
    """The leaves of a tree, non-floating ones (integers, float0) as None."""
    return [x if is_float(x) else None for x in jax.tree_util.tree_leaves(tree)]


def draw(key, tree: PyTree, batch: tuple[int, ...] = ()) -> PyTree:
    """Standard normal leaves like tree's (float0 zeros for non-floating ones)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    return treedef.unflatten([_normal(k, x, batch) for k, x in zip(keys, leaves)])


def _normal(key, x, batch):
    shape = (*batch, *jnp.shape(x))
    if is_float(x):
        return jax.random.normal(key, shape, jnp.result_type(x))
    return np.zeros(shape, jax.dtypes.float0)


def _zeros_like(tree):
    return jax.tree_util.tree_map(lambda x: jnp.zeros_like(x) if is_float(x) else x, tree)


def _add(a, b, scale=1.0):
    return jax.tree_util.tree_map(lambda x, y: x + scale * y if is_float(x) else x, a, b)


def _scale(a, s):
    return jax.tree_util.tree_map(lambda x: s * x if is_float(x) else x, a)


def signature(args: PyTree):
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves)


def _vjp(fn):
    """(args, u) -> the cotangents of fn's arguments."""
    return lambda args, u: jax.vjp(fn, *args)[1](u)


def _structure_note(hand, want) -> str:
    """Why the hand cotangents differ from autodiff's in structure or dtype, or ''."""
    hand_def, want_def = jax.tree_util.tree_structure(hand), jax.tree_util.tree_structure(want)
    if hand_def != want_def:
        return f"cotangent tree {hand_def}, expected {want_def}"
    for path, w, h in zip(*_paths(want), jax.tree_util.tree_leaves(hand)):
        if (jnp.shape(h), jnp.result_type(h)) != (jnp.shape(w), jnp.result_type(w)):
            got = f"{jnp.result_type(h)}{list(jnp.shape(h))}"
            return f"args{path}: cotangent {got}, expected {jnp.result_type(w)}{list(jnp.shape(w))}"
    return ""


def _paths(tree):
    flat_with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p) for p, _ in flat_with_path], [x for _, x in flat_with_path]


class _Notes:
    """Failures and skips found while tracing, by check name."""

    def __init__(self):
        self.failed: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.gates: list[tuple[str, tuple[int, ...]]] = []
        self.fd_native: str | None = None  # why finite differences did not run in float64

    def attempt(self, name: str, fn: Callable, out: dict):
        try:
            out[name] = fn()
        except Exception as e:  # a check that cannot trace is a failed check
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if "forward-mode" in str(e) and name == "fwd_over_rev":
                self.skipped[name] = f"JAX refuses forward mode through a custom_vjp ({reason})"
            else:
                self.failed[name] = reason


@functools.lru_cache(maxsize=64)
def program(f: Callable, reference: Callable | None, spec: Spec):
    """(jitted battery(args, key) -> dict of (got, want) pairs, notes by signature)."""
    notes_by_signature: dict = {}

    def battery(args, key):
        notes = notes_by_signature.setdefault(signature(args), _Notes())
        return _battery(f, reference, spec, notes, args, key)

    return jax.jit(battery, compiler_options=COMPILER_OPTIONS), battery, notes_by_signature


def _battery(f, reference, spec, notes, args, key):
    keys = iter(jax.random.split(key, 8))
    try:
        out, hand_vjp = jax.vjp(f, *args)
        u, u2 = draw(next(keys), out), draw(next(keys), out)
        us = draw(next(keys), out, (BATCH,)) if spec.transforms else None
        cots = _cotangents(hand_vjp, u, u2, us, spec.contract)
    except Exception as e:
        raise TraceFailure(e) from e
    got = cots["u"]
    pairs = {"draws": (flat(u), None), "hand": (got, None)}
    if reference is not None:
        notes.attempt(
            "reference", lambda: _reference(reference, args, u, out, hand_vjp, notes), pairs
        )
        pairs.update(pairs.pop("reference", {}))
    if spec.contract:
        pairs.update(_contract(cots))
    if spec.finite_differences:
        v = flat(draw(next(keys), args))
        values, native = fd.directional(f, args, flat(u), v, float64=spec.fd_float64)
        notes.fd_native = native or notes.fd_native
        pairs["finite_difference"] = (values, v)
    if spec.order >= 2 and reference is not None:
        _second_order(f, reference, args, u, hand_vjp(u), keys, notes, pairs)
    if spec.transforms:
        _transforms(f, args, us, cots, spec, notes, pairs)
    return pairs


def _cotangents(hand_vjp, u, u2, us, contract):
    """The hand VJP of every cotangent the checks need, by one `lax.map` of one backward."""
    named = {"u": u}
    if contract:
        named.update(zero=_zeros_like(u), scaled=_scale(u, SCALE), u2=u2, sum=_add(u, u2))
    for b in range(BATCH if us is not None else 0):
        named[f"example{b}"] = jax.tree_util.tree_map(lambda x, b=b: x[b], us)
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *named.values())
    results = jax.lax.map(lambda c: flat(hand_vjp(c)), stacked)
    return {name: [None if r is None else r[i] for r in results] for i, name in enumerate(named)}


def _reference(reference, args, u, out, hand_vjp, notes):
    ref_out, ref_vjp = jax.vjp(reference, *args)
    want = ref_vjp(u)
    note = _structure_note(hand_vjp(u), want)
    if note:
        notes.failed["structure"] = note
    found = gates.gates(reference, *args)
    notes.gates = [(g.where, g.shape) for g in found]
    return {
        "forward": (flat(out), flat(ref_out)),
        "reference": (flat(hand_vjp(u)), flat(want)),
        "gates": ([g.positive for g in found], None),
    }


def _contract(cots):
    zeros = [None if g is None else jnp.zeros_like(g) for g in cots["u"]]
    add = [None if a is None else a + b for a, b in zip(cots["u"], cots["u2"])]
    return {
        "zero_cotangent": (cots["zero"], zeros),
        "scaling": (cots["scaled"], [None if g is None else SCALE * g for g in cots["u"]]),
        "additivity": (cots["sum"], add),
    }


def _second_order(f, reference, args, u, got, keys, notes, pairs):
    w = draw(next(keys), got)
    tangents = (draw(next(keys), args), draw(next(keys), u))

    def rev_over_rev(fn):
        return flat(jax.vjp(_vjp(fn), args, u)[1](w))

    def fwd_over_rev(fn):
        def tangent_out(a, c):
            return flat(jax.jvp(_vjp(fn), (a, c), tangents)[1])

        eager = jax.config.jax_disable_jit  # eagerly, jax.jvp raises the error itself
        if not eager and _uses(jax.make_jaxpr(tangent_out)(args, u).jaxpr, "custom_lin"):
            # JAX traces it, then refuses at lowering: say so now, as the eager error does
            raise TypeError("can't apply forward-mode autodiff (jvp) to a custom_vjp function.")
        return tangent_out(args, u)

    for name, second in zip(ORACLES_2, (rev_over_rev, fwd_over_rev)):
        notes.attempt(name, lambda second=second: (second(f), second(reference)), pairs)


def _uses(jaxpr, primitive: str) -> bool:
    """Whether a jaxpr or any jaxpr inside it binds `primitive`."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            return True
        inner = [p.jaxpr if hasattr(p, "jaxpr") else p for p in eqn.params.values()]
        if any(_uses(j, primitive) for j in inner if hasattr(j, "eqns")):
            return True
    return False


def _batched_axes(args, spec):
    if spec.batch_argnums is None:
        return tuple(0 for _ in args)
    return tuple(0 if i in spec.batch_argnums else None for i in range(len(args)))


def _stack_flat(lists):
    return [None if xs[0] is None else jnp.stack(xs) for xs in zip(*lists)]


def _transforms(f, args, us, cots, spec, notes, pairs):
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
            flat(jax.vmap(lambda a, c: _vjp(f)(a, c), in_axes=(axes, 0))(stacked, us)),
            per_example,
        ),
        "grad_of_vmap": lambda: (flat(_vjp(batched_f)(stacked, us)), summed),
        "scan": lambda: (flat(_vjp(scanned_f)(stacked, us)), summed),
        "checkpoint": lambda: (flat(_vjp(jax.checkpoint(f))(args, u0)), each[0]),
        "jit": lambda: (each[0], None),  # compared on the host with an eager run
    }
    for name in spec.transforms:
        notes.attempt(name, checks[name], pairs)
    pairs["jit_cotangent"] = (flat(u0), None)


def run(f, reference, spec: Spec, args: Sequence[PyTree], key):
    """(pairs as numpy, notes): the battery under jit, else part by part, else eagerly.

    A check that traces but cannot lower or run (a tracer leaked into a constant) fails
    the whole program; then each part runs in its own program, to name the one at fault.
    """
    try:
        return _run_once(f, reference, spec, args, key)
    except TraceFailure as e:
        return _eager(f, reference, spec, args, key, e)
    except Exception as e:
        if spec.finite_differences and spec.fd_float64:
            return _without_float64(f, reference, spec, args, key, e)
        if spec == _base(spec):
            raise
    return _by_parts(f, reference, spec, args, key)


def _without_float64(f, reference, spec, args, key, error):
    """The battery again, with finite differences in the arguments' dtype."""
    pairs, notes = run(f, reference, spec._replace(fd_float64=False), args, key)
    notes = copy.deepcopy(notes)
    notes.fd_native = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return pairs, notes


def _run_once(f, reference, spec, args, key):
    jitted, _, notes_by_signature = program(f, reference, spec)
    pairs = jax.device_get(jitted(tuple(args), key))
    return pairs, notes_by_signature[signature(tuple(args))]


def _base(spec):
    return spec._replace(order=1, transforms=())


def _by_parts(f, reference, spec, args, key):
    pairs, notes = run(f, reference, _base(spec), args, key)
    notes = copy.deepcopy(notes)  # the cached program's notes stay as traced
    parts = [(ORACLES_2, spec._replace(transforms=()))] if spec.order == 2 else []
    parts += [((name,), _base(spec)._replace(transforms=(name,))) for name in spec.transforms]
    for names, part in parts:
        try:
            part_pairs, part_notes = _run_once(f, reference, part, args, key)
        except Exception as e:  # noqa: BLE001 - the failure is the verdict
            for name in names:
                notes.failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            continue
        pairs.update({n: part_pairs[n] for n in (*names, "jit_cotangent") if n in part_pairs})
        _merge(notes, part_notes, names)
    return pairs, notes


def _merge(notes, part_notes, names):
    for name in names:
        for kind in ("failed", "skipped"):
            if name in getattr(part_notes, kind):
                getattr(notes, kind)[name] = getattr(part_notes, kind)[name]


def _eager(f, reference, spec, args, key, failure):
    cause = failure.__cause__
    reason = f"{type(cause).__name__}: {str(cause).splitlines()[0]}"
    with jax.disable_jit():
        notes = _Notes()
        pairs = _battery(f, reference, spec, notes, tuple(args), key)
    notes.failed["jit"] = f"the hand VJP does not trace under jax.jit ({reason})"
    return jax.device_get(pairs), notes
