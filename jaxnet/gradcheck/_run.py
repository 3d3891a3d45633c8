"""Running the battery: one jitted program, else part by part, else eagerly.

A check that traces but cannot lower or run (a tracer leaked into a constant, PRNG bits in
the float64 region) fails the whole program; then the float64 region goes, then each part
runs in its own program, to name the one at fault. A hand VJP that does not trace at all
fails "jit", and the battery runs eagerly.
"""

import copy
from collections.abc import Sequence

import jax

from jaxnet.gradcheck._battery import (
    ORACLES_2,
    Spec,
    TraceFailure,
    _battery,
    _Notes,
    draw_all,
    program,
)
from jaxnet.gradcheck._trees import signature
from jaxnet.typing import PyTree


def run(f, reference, spec: Spec, args: Sequence[PyTree], seed: int):
    """(pairs as numpy, notes) of the battery for `spec` at args, its draws from `seed`."""
    try:
        found = draw_all(f, spec, tuple(args), seed)
    except Exception as e:  # noqa: BLE001 - f raises on its arguments: the verdict
        notes = _Notes()
        notes.failed["vjp"] = f"f raised {reason(e)}"
        return {}, notes
    return _run(f, reference, spec, args, found)


def _run(f, reference, spec: Spec, args: Sequence[PyTree], draws):
    try:
        return _run_once(f, reference, spec, args, draws)
    except TraceFailure as e:
        return _eager(f, reference, spec, args, draws, e)
    except Exception as e:
        if spec.finite_differences and spec.fd_float64:
            return _without_float64(f, reference, spec, args, draws, e)
        if spec == _base(spec):
            raise
    return _by_parts(f, reference, spec, args, draws)


def _without_float64(f, reference, spec, args, draws, error):
    """The battery again, with finite differences in the arguments' dtype."""
    pairs, notes = _run(f, reference, spec._replace(fd_float64=False), args, draws)
    notes = copy.deepcopy(notes)
    notes.fd_native = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return pairs, notes


def _run_once(f, reference, spec, args, draws):
    jitted, _, notes_by_signature = program(f, reference, spec)
    pairs = jax.device_get(jitted(tuple(args), draws))
    return pairs, notes_by_signature[signature(tuple(args))]


def _base(spec):
    return spec._replace(order=1, transforms=())


def _by_parts(f, reference, spec, args, draws):
    pairs, notes = _run(f, reference, _base(spec), args, draws)
    notes = copy.deepcopy(notes)  # the cached program's notes stay as traced
    parts = [(ORACLES_2, spec._replace(transforms=()))] if spec.order == 2 else []
    parts += [((name,), _base(spec)._replace(transforms=(name,))) for name in spec.transforms]
    for names, part in parts:
        try:
            part_pairs, part_notes = _run_once(f, reference, part, args, draws)
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


def reason(error: BaseException) -> str:
    """The error's type and the first line of its message."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _eager(f, reference, spec, args, draws, failure):
    notes = _Notes()
    try:
        with jax.disable_jit():
            pairs = _battery(f, reference, spec, notes, tuple(args), draws)
    except TraceFailure as again:  # eagerly too: f or its VJP raises, or the wrong tree
        notes = _Notes()
        notes.failed["vjp"] = f"f or its VJP raised {reason(again.__cause__)}"
        return {}, notes
    notes.failed["jit"] = f"the hand VJP does not trace under jax.jit ({reason(failure.__cause__)})"
    return jax.device_get(pairs), notes
