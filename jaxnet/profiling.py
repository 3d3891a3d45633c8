"""Where a jitted function spends its time: a `jax.profiler` trace, summed by kind of op.

    compiled_text, ms = profiling.time_by_kind(jax.jit(step), params, x, y)
    # ms: e.g. {"matmul": 812.0, "elementwise": 240.5, "gather": 38.1, ...} per call

The trace names each op the runtime executed after its instruction in the compiled HLO;
`op_kinds` reads that HLO and sorts every instruction into a kind: "matmul" (a dot, or a
fusion holding one), "gather" (gather, dynamic-slice), "shuffle" (sort), "copy",
"elementwise" (every other fusion or op). Control flow (while, conditional, call) is left
out, since its time is the time of the ops inside it.

Ops may run at the same time on different cores, so the kinds can sum to more than the
wall time.

Two readings of the same text need no run at all: `kernel_counts` (how many kernels of each
kind the program launches, each a pass over its operands) and `dot_signatures` (every matrix
product's operand shapes and contracting dimensions, to compare two programs' products).
"""

import collections
import gzip
import json
import math
import re
import tempfile
from pathlib import Path

import jax

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*?\b([a-z][a-z\-]*)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+) .*\{\s*$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_CONTROL = {"while", "conditional", "call", "parameter", "constant", "tuple",
            "get-tuple-element", "bitcast"}  # fmt: skip
_KIND_OF_OPCODE = {"dot": "matmul", "convolution": "matmul", "gather": "gather",
                   "dynamic-slice": "gather", "sort": "shuffle", "copy": "copy"}  # fmt: skip
_PRECEDENCE = ("matmul", "shuffle", "gather", "copy", "elementwise")
_CALL = "jaxnet.profiling call"
_ENTRY = re.compile(r"^ENTRY\s+%?([\w.\-]+)")
_DEFINITION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = ([a-z]\w*\[[\d,]*\])")
_DOT = re.compile(r"= [a-z]\w*\[[\d,]*\]\S* dot\(%?([\w.\-]+), %?([\w.\-]+)\)(.*)")
_DIMS = re.compile(r"(lhs_batch_dims|rhs_batch_dims|lhs_contracting_dims|rhs_contracting_dims)"
                   r"=\{([\d,]*)\}")  # fmt: skip
_OPERANDS = re.compile(r"^\((.*?)\)")
_NAME = re.compile(r"%([\w.\-]+)")
_DIM_NAMES = ("lhs_contracting_dims", "rhs_contracting_dims", "lhs_batch_dims", "rhs_batch_dims")


def _computations(hlo_text: str) -> dict[str, list[str]]:
    """{computation name: its instruction lines}."""
    bodies, name = {}, None
    for line in hlo_text.splitlines():
        if name is None:
            if match := _COMPUTATION.match(line):
                name = match.group(1)
                bodies[name] = []
        elif line.strip() == "}":
            name = None
        else:
            bodies[name].append(line)
    return bodies


def op_kinds(hlo_text: str) -> dict[str, str]:
    """{instruction name: kind} for every instruction of a compiled module's text."""
    bodies = _computations(hlo_text)

    def kind(line: str, depth: int = 0) -> str | None:
        match = _INSTRUCTION.match(line)
        if match is None:
            return None
        opcode = match.group(2)
        if opcode in _CONTROL:
            return None
        if opcode in ("fusion", "custom-call") and (called := _CALLS.search(line)) and depth < 8:
            inner = {kind(sub, depth + 1) for sub in bodies.get(called.group(1), [])}
            return next((k for k in _PRECEDENCE if k in inner), "elementwise")
        return _KIND_OF_OPCODE.get(opcode, "elementwise")

    kinds = {}
    for lines in bodies.values():
        for line in lines:
            if (k := kind(line)) is not None:
                kinds[_INSTRUCTION.match(line).group(1)] = k
    return kinds


def _entry(hlo_text: str) -> str:
    for line in hlo_text.splitlines():
        if match := _ENTRY.match(line):
            return match.group(1)
    raise ValueError("the HLO text has no ENTRY computation; pass compiled.as_text().")


def _elements(hlo_type: str) -> int:
    dims = hlo_type[hlo_type.index("[") + 1 : -1]
    return math.prod(int(d) for d in dims.split(",") if d)


def kernel_counts(hlo_text: str, large: int | None = None) -> dict[str, int]:
    """How many ops of each kind (see `op_kinds`) the entry computation runs, and "reduce":
    how many of them hold a reduction. Each is one pass over its operands in memory.

    With `large` (a number of elements), also "large passes": the ops other than matrix
    products that read or write an array of at least that many elements, e.g. batch x
    hidden activations.
    """
    bodies = _computations(hlo_text)
    kinds = op_kinds(hlo_text)
    lines = bodies[_entry(hlo_text)]
    types = {m.group(1): m.group(2) for line in lines if (m := _DEFINITION.match(line))}
    counts = collections.Counter(
        {"reduce": 0} if large is None else {"reduce": 0, "large passes": 0}
    )
    for line in lines:
        match = _INSTRUCTION.match(line)
        if match is None or (kind := kinds.get(match.group(1))) is None:
            continue
        counts[kind] += 1
        called = _CALLS.search(line)
        inner = bodies.get(called.group(1), []) if called else [line]
        counts["reduce"] += any(" reduce(" in sub for sub in inner)
        if large is not None and kind != "matmul":
            operands = _OPERANDS.search(line[match.end() - 1 :])
            names = [match.group(1), *_NAME.findall(operands.group(1) if operands else "")]
            counts["large passes"] += any(
                n in types and _elements(types[n]) >= large for n in names
            )
    return dict(counts)


def dot_signatures(hlo_text: str) -> list[tuple]:
    """Every dot in the module, fused or not, as (lhs type, rhs type, lhs contracting dims,
    rhs contracting dims, lhs batch dims, rhs batch dims), sorted.

    Two programs with equal lists compute the same matrix products, whatever fuses around them.
    """
    signatures = []
    for lines in _computations(hlo_text).values():
        types = {m.group(1): m.group(2) for line in lines if (m := _DEFINITION.match(line))}
        for line in lines:
            if (match := _DOT.search(line)) is None:
                continue
            dims = dict(_DIMS.findall(match.group(3)))
            operands = (types.get(match.group(1), "?"), types.get(match.group(2), "?"))
            signatures.append((*operands, *(dims.get(k, "") for k in _DIM_NAMES)))
    return sorted(signatures)


def _trace_events(trace_dir: Path) -> list[dict]:
    files = sorted(trace_dir.glob("**/perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise RuntimeError(f"jax.profiler wrote no perfetto trace under {trace_dir}.")
    with gzip.open(files[-1]) as f:
        trace = json.load(f)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def time_by_kind(
    jitted, *args, calls: int = 3, trace_dir: str | Path | None = None
) -> tuple[str, dict]:
    """(compiled HLO text, {kind: milliseconds per call}) of `jitted(*args)`.

    Args:
      jitted: a `jax.jit`-wrapped function; it is compiled and run once untraced first.
      *args: its arguments.
      calls: how many calls the trace holds; times are their mean per call.
      trace_dir: where the trace goes (open it in Perfetto or TensorBoard); default: a
        temporary folder, removed afterwards.

    Returns:
      The optimised HLO the runtime executed, and the duration of its ops summed by
      kind, plus "total ops" (their sum) and "wall" (the median call, start to finish).
    """
    if calls < 1:
        raise ValueError(f"calls={calls} must be at least 1.")
    compiled_text = jitted.lower(*args).compile().as_text()
    kinds = op_kinds(compiled_text)
    jax.block_until_ready(jitted(*args))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(trace_dir or scratch)
        with jax.profiler.trace(str(folder), create_perfetto_trace=True):
            for _ in range(calls):
                with jax.profiler.TraceAnnotation(_CALL):
                    jax.block_until_ready(jitted(*args))
        events = [e for e in _trace_events(folder) if e.get("ph") == "X"]
    microseconds = collections.Counter()
    for event in events:
        if (k := kinds.get(event["name"])) is not None:
            microseconds[k] += event["dur"] / calls
    walls = sorted(e["dur"] for e in events if e["name"] == _CALL)
    ms = {k: microseconds[k] / 1e3 for k in _PRECEDENCE if k in microseconds}
    ms["total ops"] = sum(microseconds.values()) / 1e3
    ms["wall"] = walls[len(walls) // 2] / 1e3 if walls else 0.0
    return compiled_text, ms
