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
    program,
)
from jaxnet.gradcheck._trees import signature
from jaxnet.typing import PyTree


def run(f, reference, spec: Spec, args: Sequence[PyTree], key):
    """(pairs as numpy, notes) of the battery for `spec` at args."""
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
