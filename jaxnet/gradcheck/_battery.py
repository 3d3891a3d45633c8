"""Every comparison of `gradcheck.check`, traced into one jitted program per shape.

The program takes its random cotangents and directions as arguments, drawn on the host
(`draw_all`), and returns pairs (got, want) of flat leaf lists, non-floating leaves as
None; the host compares them. A check whose tracing raises is recorded as failed (or, for
forward mode through a custom_vjp, as skipped) in `notes`, filled while the program
traces, per signature.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _xla
from jaxnet.gradcheck import _fd as fd
from jaxnet.gradcheck import _gates as gates
from jaxnet.gradcheck import _transforms as transforms
from jaxnet.gradcheck import _trees as trees
from jaxnet.gradcheck import tolerances

ORACLES_2 = ("rev_over_rev", "fwd_over_rev")
TRANSFORMS = transforms.TRANSFORMS
SCALE = 8.0  # a power of two: vjp(8 u) = 8 vjp(u) holds to the last bit
# The program runs once per shape: compile time dominates (see jaxnet._xla).
COMPILER_OPTIONS = _xla.QUICK_COMPILE


class Spec(NamedTuple):
    """What the program computes: static, part of the cache key."""

    order: int
    transforms: tuple[str, ...]
    batch_argnums: tuple[int, ...] | None  # None: every argument gets the batch axis
    contract: bool = True
    finite_differences: bool = True
    fd_float64: bool = True  # False once a float64 region failed to lower (say, PRNG bits)
    fd_step: float = tolerances.FD64_STEP  # of float64 differences, relative to x's scale


class TraceFailure(Exception):
    """The hand VJP itself does not trace; the caller retries without jit."""


def _structure_note(hand, want) -> str:
    """Why the hand cotangents differ from autodiff's in structure or dtype, or ''."""
    hand_def, want_def = jax.tree_util.tree_structure(hand), jax.tree_util.tree_structure(want)
    if hand_def != want_def:
        return f"cotangent tree {hand_def}, expected {want_def}"
    for path, w, h in zip(*trees.paths(want), jax.tree_util.tree_leaves(hand)):
        if (jnp.shape(h), jnp.result_type(h)) != (jnp.shape(w), jnp.result_type(w)):
            got = f"{jnp.result_type(h)}{list(jnp.shape(h))}"
            return f"args{path}: cotangent {got}, expected {jnp.result_type(w)}{list(jnp.shape(w))}"
    return ""


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
    """(jitted battery(args, draws) -> dict of (got, want) pairs, notes by signature)."""
    notes_by_signature: dict = {}

    def battery(args, draws):
        notes = notes_by_signature.setdefault(trees.signature(args), _Notes())
        return _battery(f, reference, spec, notes, args, draws)

    return jax.jit(battery, compiler_options=COMPILER_OPTIONS), battery, notes_by_signature


def draw_all(f: Callable, spec: Spec, args: tuple, seed: int) -> dict[str, list]:
    """Every random draw of the battery for `spec`, flat numpy leaves, from one seed."""
    rng = np.random.default_rng(seed)
    out = _out_shapes(f, args)
    found = {"u": trees.draw(rng, out), "u2": trees.draw(rng, out)}
    if spec.transforms:
        found["us"] = trees.draw(rng, out, (transforms.BATCH,))
    if spec.finite_differences:
        found["v"] = trees.draw(rng, args, (fd.DIRECTIONS,))
    if spec.order >= 2:
        found.update(w=trees.draw(rng, args), tangents=trees.draw(rng, (args, out)))
    return found


def _out_shapes(f, args):
    try:
        return jax.eval_shape(f, *args)
    except Exception:  # noqa: BLE001 - an f that runs only eagerly: the battery says "jit"
        return f(*args)


def _battery(f, reference, spec, notes, args, draws):
    try:
        out, hand_vjp = jax.vjp(f, *args)
        u, u2 = trees.unflat(out, draws["u"]), trees.unflat(out, draws["u2"])
        us = trees.unflat(out, draws["us"], (transforms.BATCH,)) if spec.transforms else None
        cots = _cotangents(hand_vjp, u, u2, us, spec.contract)
    except Exception as e:
        raise TraceFailure(e) from e
    got = cots["u"]
    pairs = {"draws": (trees.flat(u), None), "hand": (got, None)}
    if reference is not None:
        notes.attempt(
            "reference", lambda: _reference(reference, args, u, out, hand_vjp, notes), pairs
        )
        pairs.update(pairs.pop("reference", {}))
    if spec.contract:
        pairs.update(_contract(cots))
    if spec.finite_differences:
        v = draws["v"]
        (values, floor), native = fd.directional(
            f, args, trees.flat(u), v, float64=spec.fd_float64, step=spec.fd_step
        )
        notes.fd_native = native or notes.fd_native
        pairs["finite_difference"] = (values, v)
        pairs["fd_floor"] = (floor, None)
    if spec.order >= 2 and reference is not None:
        _second_order(f, reference, args, u, hand_vjp(u), draws, notes, pairs)
    if spec.transforms:
        transforms.check(f, args, us, cots, spec, notes, pairs)
    return pairs


def _cotangents(hand_vjp, u, u2, us, contract):
    """The hand VJP of every cotangent the checks need, by one `lax.map` of one backward."""
    named = {"u": u}
    if contract:
        named.update(
            zero=trees.zeros_like(u), scaled=trees.scale(u, SCALE), u2=u2, sum=trees.add(u, u2)
        )
    for b in range(transforms.BATCH if us is not None else 0):
        named[f"example{b}"] = jax.tree_util.tree_map(lambda x, b=b: x[b], us)
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *named.values())
    results = jax.lax.map(lambda c: trees.flat(hand_vjp(c)), stacked)
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
        "forward": (trees.flat(out), trees.flat(ref_out)),
        "reference": (trees.flat(hand_vjp(u)), trees.flat(want)),
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


def _second_order(f, reference, args, u, got, draws, notes, pairs):
    w, tangents = trees.unflat(got, draws["w"]), trees.unflat((args, u), draws["tangents"])

    def rev_over_rev(fn):
        return trees.flat(jax.vjp(trees.vjp_of(fn), args, u)[1](w))

    def fwd_over_rev(fn):
        def tangent_out(a, c):
            return trees.flat(jax.jvp(trees.vjp_of(fn), (a, c), tangents)[1])

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
