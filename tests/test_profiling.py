"""jaxnet.profiling: HLO instructions sorted by kind, and a real trace summed by kind."""

import functools

import jax
import jax.numpy as jnp
import optax
import pytest

import jaxnet
from jaxnet import profiling
from jaxnet.training import loop

HLO = """\
HloModule m, entry_computation_layout={(f32[4,3]{1,0})->f32[4,2]{1,0}}

%fused_dot (p0: f32[4,3], p1: f32[3,2]) -> f32[4,2] {
  %p0 = f32[4,3]{1,0} parameter(0)
  %p1 = f32[3,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_add (p0: f32[4,2]) -> f32[4,2] {
  %p0 = f32[4,2]{1,0} parameter(0)
  ROOT %add.3 = f32[4,2]{1,0} add(%p0, %p0)
}

ENTRY %main (x: f32[4,3], w: f32[3,2], i: s32[4]) -> f32[4,2] {
  %x = f32[4,3]{1,0} parameter(0)
  %w = f32[3,2]{1,0} parameter(1)
  %ynn_fusion.2 = f32[4,2]{1,0} fusion(%x, %w), kind=kCustom, calls=%fused_dot
  %gather.7 = f32[4,2]{1,0} gather(%ynn_fusion.2, %i), offset_dims={1}
  %sort.0 = s32[4]{0} sort(%i), dimensions={0}, to_apply=%cmp
  %copy.1 = f32[4,2]{1,0} copy(%gather.7)
  %while.3 = (s32[]) while(%t), condition=%c, body=%b
  ROOT %add_fusion = f32[4,2]{1,0} fusion(%copy.1), kind=kLoop, calls=%fused_add
}
"""


def test_op_kinds_reads_opcodes_and_looks_inside_fusions():
    kinds = profiling.op_kinds(HLO)
    assert kinds["ynn_fusion.2"] == "matmul" and kinds["add_fusion"] == "elementwise"
    assert kinds["gather.7"] == "gather" and kinds["sort.0"] == "shuffle"
    assert kinds["copy.1"] == "copy" and kinds["dot.1"] == "matmul"
    assert "while.3" not in kinds and "x" not in kinds  # control flow and parameters


def test_a_train_epoch_is_mostly_matmuls_and_every_kind_is_seen(tmp_path):
    params = jaxnet.init_mlp(jax.random.key(0), [64, 128, 10])
    x = jax.random.normal(jax.random.key(1), (1024, 64))
    y = jax.random.randint(jax.random.key(2), (1024,), 0, 10)
    optimizer = optax.adam(1e-3)
    loss = functools.partial(jaxnet.mlp_loss, loss="cross_entropy")
    epoch = loop.make_train_epoch(loss, optimizer, 32)
    state = loop.init_state(params, optimizer, jax.random.key(3))
    hlo, ms = profiling.time_by_kind(epoch.jitted, state, x, y, trace_dir=tmp_path)
    assert "dot(" in hlo
    assert {"matmul", "elementwise", "gather", "shuffle"} <= set(ms)
    assert all(v > 0 for v in ms.values()), ms
    assert ms["total ops"] >= ms["matmul"] and ms["wall"] > 0
    assert any(tmp_path.glob("**/perfetto_trace.json.gz"))


def test_time_by_kind_of_a_plain_matmul():
    f = jax.jit(lambda a: a @ a)
    _, ms = profiling.time_by_kind(f, jnp.ones((256, 256)))
    assert ms["matmul"] > 0 and set(ms) <= {"matmul", "elementwise", "copy", "total ops", "wall"}


def test_calls_must_be_positive():
    with pytest.raises(ValueError, match="calls=0"):
        profiling.time_by_kind(jax.jit(lambda a: a + 1), jnp.ones(3), calls=0)


def test_kernel_counts_counts_the_entry_computation_and_its_reductions():
    counts = profiling.kernel_counts(HLO)
    assert counts == {"matmul": 1, "gather": 1, "shuffle": 1, "copy": 1, "elementwise": 1,
                      "reduce": 0}  # fmt: skip
    reducing = HLO.replace("add(%p0, %p0)", "reduce(%p0, %p0)")
    assert profiling.kernel_counts(reducing)["reduce"] == 1
    with pytest.raises(ValueError, match="no ENTRY"):
        profiling.kernel_counts("HloModule m")


def test_dot_signatures_read_operands_and_contracting_dims():
    assert profiling.dot_signatures(HLO) == [("f32[4,3]", "f32[3,2]", "1", "0", "", "")]
    a, b = jnp.ones((64, 32)), jnp.ones((32, 48))

    def dots(f):
        return profiling.dot_signatures(jax.jit(f).lower(a, b).compile().as_text())

    assert dots(lambda a, b: a @ b) == [("f32[64,32]", "f32[32,48]", "1", "0", "", "")]
    assert dots(lambda a, b: jnp.tanh(a @ b + 1)) == dots(lambda a, b: a @ b)
    assert dots(lambda a, b: (a @ b).T @ a) != dots(lambda a, b: a @ b)  # a second product


def test_kernel_counts_counts_passes_over_large_arrays():
    # gather.7, copy.1 and add_fusion touch f32[4,2]; the sort reads s32[4]; the dot is not
    # counted, whatever its size.
    assert profiling.kernel_counts(HLO, large=8)["large passes"] == 3
    assert profiling.kernel_counts(HLO, large=9)["large passes"] == 0
    assert "large passes" not in profiling.kernel_counts(HLO)
