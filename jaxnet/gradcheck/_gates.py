"""Find the ReLU-like gates of a plain function and how its inputs split across them.

A gate is a comparison or max/min of a floating array against the literal 0, as
`jnp.maximum(x, 0)` and `jnp.where(x > 0, ...)` trace. When every element of a gate's
input lies on one side, a backward with the wrong mask (or none) agrees with autodiff:
the check is weak. The function's jaxpr is evaluated primitive by primitive, inlining
jit, custom_jvp and custom_vjp calls, so that the gates can be traced into the check's
single jitted program.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

from jaxnet.typing import Array, PyTree

_GATES = {"gt", "ge", "lt", "le", "max", "min"}
_INLINE = {"jit": "jaxpr", "pjit": "jaxpr", "custom_jvp_call": "call_jaxpr",
           "custom_vjp_call": "call_jaxpr", "closed_call": "call_jaxpr"}  # fmt: skip


class Gate(NamedTuple):
    """One gate: where it is, its input's shape, and the fraction of inputs above 0."""

    where: str
    shape: tuple[int, ...]
    positive: Array


def gates(fn: Callable[..., PyTree], *args: PyTree) -> list[Gate]:
    """Evaluates fn(*args) and returns its gates, in order of evaluation."""
    closed = jax.make_jaxpr(fn)(*args)
    found: list[Gate] = []
    _evaluate(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args), found)
    return found


def _is_zero_literal(var) -> bool:
    return isinstance(var, core.Literal) and np.all(np.asarray(var.val) == 0)


def _record(eqn, invals, found):
    for var, other_var, other in [(*eqn.invars, invals[1]), (*eqn.invars[::-1], invals[0])]:
        if _is_zero_literal(var) and not _is_zero_literal(other_var):
            if jnp.issubdtype(other.dtype, jnp.floating) and other.size > 1:
                where = f"{eqn.primitive.name}(x, 0) #{len(found) + 1}"
                found.append(Gate(where, tuple(other.shape), jnp.mean(other > 0)))
            return


def _evaluate(jaxpr, consts, args, found):
    env = {}

    def read(var):
        return var.val if isinstance(var, core.Literal) else env[var]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        inner = eqn.params.get(_INLINE.get(eqn.primitive.name, ""))
        if inner is not None:
            outvals = _evaluate(inner.jaxpr, inner.consts, invals, found)
        else:
            if eqn.primitive.name in _GATES and len(invals) == 2:
                _record(eqn, invals, found)
            with eqn.ctx.manager:
                outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outvals = outvals if eqn.primitive.multiple_results else [outvals]
        env.update(zip(eqn.outvars, outvals))
    return [read(v) for v in jaxpr.outvars]
