"""The GPT: its layers, its hand VJP against jax.grad, cross_entropy's ignore_index, and the
training job (resume, the mesh, results.json) run small on a text made here."""

import contextlib
import json
import math
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, cpu_env

import jaxnet
from experiments import common
from jaxnet import gpt, gradcheck, losses, text
from jaxnet import layers as L
from jaxnet.training import checkpoint, lm, parallel

TRANSFORMS = ("jit", "vmap")


# ---------------------------------------------------------------- the new layers


def test_new_layers_pass_check_layer():
    # tied_embedding around learned positions, a layer_norm without bias and an exact GELU
    # between denses: each new rule is held to jax.grad, finite differences and second order.
    body = [L.position_embedding(5, stddev=0.5), L.layer_norm(bias=False), L.dense(5),
            L.gelu(approximate=False), L.dense(4)]  # fmt: skip
    net = L.tied_embedding(7, 4, *body, stddev=0.5)
    ids = jnp.array([[0, 3, 6], [2, 2, 5]])
    with jax.enable_x64(True):
        gradcheck.check_layer(net, ids.shape, x=ids, dtype=jnp.float64, modes=("eval",),
                              transforms=TRANSFORMS)  # fmt: skip
        for layer, shape in ((L.layer_norm(bias=False), (3, 4)),
                             (L.gelu(approximate=False), (3, 4)),
                             (L.position_embedding(5), (2, 3, 4))):  # fmt: skip
            gradcheck.check_layer(layer, shape, dtype=jnp.float64, modes=("eval",),
                                  transforms=TRANSFORMS, input_scale=2.0)  # fmt: skip


def test_exact_gelu_is_torchs_and_the_tied_head_reads_the_table():
    x = jnp.linspace(-4, 4, 9)
    y, _, _ = L.gelu(approximate=False).forward({}, {}, x)
    np.testing.assert_allclose(y, jax.nn.gelu(x, approximate=False), rtol=1e-6, atol=1e-7)
    net = L.tied_embedding(5, 3)
    _, params, state = net.init(jax.random.key(0), (1, 2))
    assert set(params) == {"table", "body"} and params["table"].shape == (5, 3)
    logits, _ = L.apply(net, params, state, jnp.array([[1, 4]]))
    table = params["table"]
    np.testing.assert_allclose(logits[0], table[jnp.array([1, 4])] @ table.T, rtol=1e-6)


def test_layer_norm_without_bias_has_no_bias_param_and_bad_arguments_are_refused():
    _, params, _ = L.layer_norm(bias=False).init(jax.random.key(0), (2, 3))
    assert set(params) == {"scale"}
    with pytest.raises(TypeError, match="gelu: approximate"):
        L.gelu(approximate="no")
    with pytest.raises(L.LayerError, match="tied_embedding: the body maps"):
        L.tied_embedding(5, 3, L.dense(4)).init(jax.random.key(0), (1, 2))
    with pytest.raises(ValueError, match="n_embd=10 must be a multiple of n_head=4"):
        gpt.gpt(5, n_embd=10, n_head=4)


# ------------------------------------------------------- the whole GPT against jax.grad


def _plain_gpt_loss(params, ids, labels, heads):
    """nanoGPT's forward written out here in jax.numpy, apart from jaxnet's reference."""

    def norm(x, p):
        mu = x.mean(-1, keepdims=True)
        xc = x - mu
        y = xc / jnp.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5) * p["scale"]
        return y + p["bias"] if "bias" in p else y

    def dense(x, p):
        return x @ p["w"] + p["b"] if "b" in p else x @ p["w"]

    table, (pos, *blocks, final) = params["table"], params["body"]
    b, t = ids.shape
    x = table[ids] + pos["table"][:t]
    for attn, mlp in zip(blocks[::2], blocks[1::2]):
        q, k, v = jnp.split(dense(norm(x, attn[0]), attn[1]), 3, axis=-1)
        q, k, v = (a.reshape(b, t, heads, -1).transpose(0, 2, 1, 3) for a in (q, k, v))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
        scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -jnp.inf)
        y = (jax.nn.softmax(scores, -1) @ v).transpose(0, 2, 1, 3).reshape(b, t, -1)
        x = x + dense(y, attn[3])
        h = dense(norm(x, mlp[0]), mlp[1])
        x = x + dense(0.5 * h * (1 + jax.scipy.special.erf(h / math.sqrt(2))), mlp[3])
    logits = norm(x, final) @ table.T
    logp = jax.nn.log_softmax(logits, -1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], -1))


@pytest.mark.parametrize("bias", [False, True])
def test_fused_gpt_gradient_equals_jax_grad_of_a_plain_forward(bias):
    with jax.enable_x64(True):
        net = gpt.gpt(11, n_layer=2, n_head=2, n_embd=8, block_size=6, bias=bias)
        ids = jax.random.randint(jax.random.key(1), (3, 5), 0, 11)
        labels = jax.random.randint(jax.random.key(2), (3, 5), 0, 11)
        _, params, state = net.init(jax.random.key(0), ids.shape, jnp.float64)
        params = jax.tree.map(lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size)).reshape(p.shape),
                              params)  # away from the init's zeros and ones  # fmt: skip
        expected = jax.jit(jax.grad(_plain_gpt_loss), static_argnums=3)(params, ids, labels, 2)
        for grad in ("fused", "ops"):
            got = jax.jit(jax.grad(lambda p, g=grad: jaxnet.network_loss(
                net, p, state, ids, labels, loss="cross_entropy", grad=g)[0]))(params)  # fmt: skip
            gradcheck.assert_close(got, expected, rtol=1e-9, atol=1e-15)
        # The table's gradient is both uses' gradients: the lookup's and the head's.
        assert gpt.count_parameters(params) == sum(p.size for p in jax.tree.leaves(params))
        mask = gpt.decay_mask(params)
        assert mask["table"] and mask["body"][1][1]["w"] and not mask["body"][1][0]["scale"]


def test_generate_appends_sampled_ids_and_slides_the_window():
    net = gpt.gpt(7, n_layer=1, n_head=1, n_embd=4, block_size=4)
    _, params, state = net.init(jax.random.key(0), (1, 4))
    sampler = gpt.make_generate(net, 4, 6)
    out = np.asarray(sampler(params, state, jnp.array([1, 2]), jax.random.key(3), 1.0))
    assert out.shape == (6,) and ((0 <= out) & (out < 7)).all()
    # Step by step by hand: the window is the last (up to) 4 ids; draw with the same keys.
    ids, keys = [1, 2], jax.random.split(jax.random.key(3), 6)
    last = jax.jit(lambda w: L.apply(net, params, state, w)[0][0, -1])
    for step_key in keys:
        ids.append(int(jax.random.categorical(step_key, last(jnp.array(ids[-4:])[None]))))
    assert ids[2:] == out.tolist()
    with pytest.raises(ValueError, match="temperature=0.0 must be > 0"):
        gpt.generate(net, params, state, [1], 2, jax.random.key(0), block_size=4, temperature=0)


# ------------------------------------------------------------ cross_entropy's ignore_index


def test_cross_entropy_ignore_index_is_torchs():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 5))
    labels = jnp.array([[1, -100, 4], [0, 2, -100]])
    kept = labels != -100
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.where(kept, labels, 0)[..., None],
                                 -1)[..., 0]  # fmt: skip
    expected = -jnp.sum(jnp.where(kept, picked, 0)) / jnp.sum(kept)
    rule = losses.cross_entropy(ignore_index=-100)
    op = losses.as_op(rule)
    np.testing.assert_allclose(op(logits, labels), expected, rtol=1e-6)
    grad = jax.grad(op)(logits, labels)
    gradcheck.assert_close(grad, jax.grad(rule.value)(logits, labels))
    assert not np.asarray(grad[~kept]).any()  # ignored positions get no gradient
    # Every label ignored: loss 0 and gradient 0, not NaN.
    none = jnp.full((2, 3), -100)
    assert float(op(logits, none)) == 0.0 and not np.asarray(jax.grad(op)(logits, none)).any()
    # Out-of-range labels other than ignore_index are still refused on the host.
    with pytest.raises(ValueError, match=r"or equal ignore_index=-100; found 1 outside"):
        rule.check((2, 3, 5), jnp.array([[1, -100, 5], [0, 2, 3]]), None, "loss")
    with pytest.raises(TypeError, match="ignore_index=0.5 must be an int"):
        losses.cross_entropy(ignore_index=0.5)


# -------------------------------------------------------------------- the training job

TINY = dict(n_layer=1, n_head=2, n_embd=8, block_size=8, batch_size=4, max_iters=6,
            eval_interval=3, eval_iters=2, log_interval=2, warmup_iters=2, lr_decay_iters=6,
            sample_chars=12)  # fmt: skip


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    words = ["the cat", "sat on", "a mat", "and then", "it ran", "away."]
    rng = np.random.default_rng(0)
    path.write_text("\n".join(" ".join(rng.choice(words, 4)) for _ in range(120)))
    return str(path)


def test_learning_rate_is_nanogpts_get_lr():
    config = lm.GPTConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=2000)
    schedule = lm.learning_rate(config)

    def get_lr(it):  # nanoGPT's train.py
        if it < 100:
            return 1e-3 * (it + 1) / (100 + 1)
        if it > 2000:
            return 1e-4
        coeff = 0.5 * (1.0 + math.cos(math.pi * (it - 100) / (2000 - 100)))
        return 1e-4 + coeff * (1e-3 - 1e-4)

    for it in (0, 50, 99, 100, 101, 1000, 1999, 2000, 2001, 3000):
        assert float(schedule(it)) == pytest.approx(get_lr(it), rel=1e-5)


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_optimizer_is_optax_adamw_with_clipping_as_nanogpt_configures_it(grad_clip):
    config = lm.GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, warmup_iters=2,
                          grad_clip=grad_clip)  # fmt: skip
    _, params, _ = gpt.gpt(11, n_layer=1, n_head=2, n_embd=8, block_size=8).init(
        jax.random.key(0), (2, 8)
    )
    clip = [optax.clip_by_global_norm(grad_clip)] if grad_clip else []
    adamw = optax.chain(*clip, optax.adamw(
        lm.learning_rate(config), b1=config.beta1, b2=config.beta2, eps=1e-8,
        weight_decay=config.weight_decay, mask=gpt.decay_mask))  # fmt: skip
    ours = lm.optimizer(config)
    states, trees = [adamw.init(params), ours.init(params)], [params, params]
    for i in range(4):  # past the warmup; gradients large enough to be clipped
        key = jax.random.key(i)
        grads = jax.tree.map(lambda p, key=key: 5 * jax.random.normal(key, p.shape), params)
        for k, opt in enumerate((adamw, ours)):
            updates, states[k] = opt.update(grads, states[k], trees[k])
            trees[k] = optax.apply_updates(trees[k], updates)
    assert_trees_close(trees[1], trees[0], rtol=1e-6, atol=1e-7)


def test_bad_settings_are_refused_together():
    with pytest.raises(ValueError) as e:
        lm.GPTConfig(n_layer=0, dropout=1.5, grad="nope", n_embd=10, n_head=4, seed=-1,
                     eval_iters=10**6)  # fmt: skip
    for part in ("--n_layer=0 must be a positive int", "--dropout=1.5 must lie in [0, 1)",
                 "--grad='nope' must be one of", "--n_embd=10 must be a multiple",
                 "--seed=-1 must lie in [0, 2**32)", "12,000,000 windows an estimate"):  # fmt: skip
        assert part in str(e.value)


@pytest.mark.slow
def test_train_gpt_writes_results_and_a_stopped_run_resumes_bitwise(tmp_path, corpus_file):
    config = lm.GPTConfig(text=corpus_file, **TINY)
    lines = []
    whole = lm.train_gpt(config, tmp_path / "whole", log=lines.append)
    for key in ("train_loss", "val_loss", "val_loss_full", "seconds", "ms_per_iter",
                "tokens_per_second", "parameters", "samples"):  # fmt: skip
        assert key in whole, key
    assert len(whole["samples"]) == 12 and whole["iterations"] == 6
    assert [h["iter"] for h in whole["history"]] == [3, 6]
    assert all(math.isfinite(whole[k]) for k in ("val_loss", "val_loss_full", "train_loss"))
    assert (
        json.loads((tmp_path / "whole" / "results.json").read_text())["val_loss"]
        == (whole["val_loss"])
    )
    assert any(line.startswith("iter 2/6: loss") and "tokens/s" in line for line in lines)

    stopped = lm.GPTConfig(text=corpus_file, stop_after_iter=4, **TINY)
    assert lm.train_gpt(stopped, tmp_path / "split") is None
    resumed = lm.train_gpt(config, tmp_path / "split")
    for key in ("train_loss", "val_loss", "val_loss_full", "samples", "history"):
        assert resumed[key] == whole[key], key
    template = checkpoint.read_meta(tmp_path / "whole" / "checkpoint.npz")
    assert template["iter"] == 6
    a, _ = checkpoint._read(tmp_path / "whole" / "checkpoint.npz")
    b, _ = checkpoint._read(tmp_path / "split" / "checkpoint.npz")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))

    # The finished run is shown again, not retrained; other flags are refused.
    assert lm.train_gpt(config, tmp_path / "whole")["seconds"] == whole["seconds"]
    other = lm.GPTConfig(text=corpus_file, **{**TINY, "seed": 1})
    with pytest.raises(ValueError, match=r"--seed=1337 \(now 1\)"):
        lm.train_gpt(other, tmp_path / "whole")


@pytest.mark.slow
def test_a_run_stops_at_the_first_chunk_end_past_stop_after_iter_and_refuses_a_changed_text(
    tmp_path, corpus_file, monkeypatch
):
    path = tmp_path / "mine.txt"
    path.write_text(open(corpus_file).read())
    # Chunks end at 2, 3, 4 and 6 (log_interval 2, an estimate at 3): 5 stops at 6.
    config = lm.GPTConfig(text=str(path), **{**TINY, "max_iters": 8, "stop_after_iter": 5})
    lines = []
    assert lm.train_gpt(config, tmp_path / "run", log=lines.append) is None
    assert lines[-1] == "stopped after iteration 6; run the same command again to continue"
    # A checkpoint whose optimizer state has another layout (an earlier jaxnet's) is refused.
    monkeypatch.setattr(lm, "_OPTIMIZER_STATE", "another layout")
    with pytest.raises(checkpoint.CheckpointError, match="written by an earlier jaxnet.*"
                       "--overwrite starts afresh"):  # fmt: skip
        lm.train_gpt(config, tmp_path / "run")
    monkeypatch.undo()
    path.write_text(path.read_text() + " and more")
    with pytest.raises(ValueError, match="was trained on another text than --text="):
        lm.train_gpt(config, tmp_path / "run")


def test_a_missing_or_short_text_is_refused(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("abcdefghijklmnopqrstuvwxyz")
    with pytest.raises(ValueError, match="fewer than --block_size \\+ 2"):
        lm.train_gpt(lm.GPTConfig(text=str(short), **TINY), tmp_path / "out")
    with pytest.raises(text.TextError, match="nope.txt: no such file"):
        lm.train_gpt(lm.GPTConfig(text=str(tmp_path / "nope.txt"), **TINY), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before the output folder is made


def test_compile_ahead_leaves_the_evaluations_and_the_sampler_nothing_to_compile(corpus_file):
    # As the run does: compile_ahead gets the fresh params, the calls get a chunk's output.
    config = lm.GPTConfig(text=corpus_file, **TINY)
    corpus = text.load(corpus_file)
    mesh = parallel.make_mesh()
    model, state = lm.build(config, corpus.vocab_size, mesh)
    prompt = jnp.asarray(corpus.encode("\n"))
    model.compile_ahead(state.params, len(corpus.val), prompt)
    state, _ = model.chunk(state, jax.device_put(corpus.train, parallel.replicated(mesh)), 2)
    with _lowerings() as lowered:
        model.estimate(state.params, corpus.val, [1, 2])
        model.full_loss(state.params, corpus.val)
        jax.block_until_ready(model.sample(state.params, prompt, jax.random.key(3),
                                           jnp.float32(0.5)))  # fmt: skip
    assert not lowered


def test_build_given_the_training_ids_compiles_the_first_chunk(corpus_file):
    config = lm.GPTConfig(text=corpus_file, **TINY)
    corpus = text.load(corpus_file)
    mesh = parallel.make_mesh()
    train = jax.device_put(corpus.train, parallel.replicated(mesh))
    model, state = lm.build(config, corpus.vocab_size, mesh, train=train)
    with _lowerings() as lowered:
        state, values = model.chunk(state, train, config.chunk_length)
    assert not lowered
    # The same losses as a build that compiles the chunk when it is called.
    model, fresh = lm.build(config, corpus.vocab_size, mesh)
    np.testing.assert_array_equal(values, model.chunk(fresh, train, config.chunk_length)[1])
    with pytest.raises(TypeError, match="jax.device_put"):
        lm.build(config, corpus.vocab_size, mesh, train=corpus.train)  # a numpy array


@contextlib.contextmanager
def _lowerings():
    """The programs jax lowers or compiles in the block; it checks first that the listener
    hears a new one."""
    lowered = []

    def listen(event, seconds, **kwargs):
        del seconds, kwargs
        if event in ("/jax/core/compile/jaxpr_to_mlir_module_duration",
                     "/jax/core/compile/backend_compile_duration"):  # fmt: skip
            lowered.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        jax.jit(lambda a: a * 3 + 1)(jnp.arange(7))  # something new: the listener hears it
        assert lowered
        lowered.clear()
        yield lowered
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_losses(corpus_file):
    # 8 simulated CPU devices in a fresh process; the batch of 8 is split over them, and so
    # are the evaluations' windows.
    script = textwrap.dedent(f"""
        import jax, numpy as np
        from jaxnet import text
        from jaxnet.training import lm, parallel
        config = lm.GPTConfig(text={corpus_file!r}, **{dict(TINY, batch_size=8)!r})
        corpus = text.load(config.text)
        data = jax.numpy.asarray(corpus.train)
        out = []
        for devices in (jax.devices()[:1], jax.devices()):
            mesh = parallel.make_mesh(devices)
            train = jax.device_put(data, parallel.replicated(mesh))
            model, state = lm.build(config, corpus.vocab_size, mesh, train=train)
            state, values = model.chunk(state, train, 20)
            out.append([*np.asarray(values), model.estimate(state.params, corpus.val, [1, 2]),
                        model.full_loss(state.params, corpus.val)])
        out = np.array(out)
        try:  # the ids on one device of the 8: not as the chunks get them
            lm.build(config, corpus.vocab_size, mesh, train=data)
            refused = "no"
        except TypeError as e:
            refused = "placed" if "placed as" in str(e) else repr(e)
        print(len(jax.devices()), np.abs(out[0] - out[1]).max(), out[1][-3:].min(), refused)
    """)
    # The suite's own XLA_FLAGS (tests/conftest.py: faster compiles) kept, the devices added.
    done = subprocess.run([sys.executable, "-c", script], env=cpu_env(8), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    devices, diff, least, refused = done.stdout.split()
    assert devices == "8" and float(diff) <= 1e-5 and 0 < float(least) < math.inf
    assert refused == "placed"


@pytest.mark.slow
def test_the_script_trains_prints_samples_and_refuses_bad_flags(tmp_path, corpus_file):
    tiny = [f"--{k}={v}" for k, v in {**TINY, "max_iters": 4, "eval_interval": 4}.items()]
    command = [sys.executable, "-m", "experiments.gpt", f"--text={corpus_file}", *tiny]
    cache = tmp_path / "xla"  # the suite's own cache set aside for this one
    done = subprocess.run([*command, "--cpu_devices=2", f"--output_dir={tmp_path}/run",
                           f"--compilation_cache={cache}"],
                          env=cpu_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert any(cache.glob("jit_chunk-*")), "the chunk's program was not cached"
    assert "iter 2/4: loss" in done.stdout and "step 4: train loss" in done.stdout
    assert "samples:" in done.stdout
    assert f"results in {tmp_path}/run/results.json" in done.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["iterations"] == 4 and len(results["samples"]) == 12
    assert results["devices"] == 2  # the CPU split in two, the batch of 4 over them
    bad = subprocess.run([*command, "--n_head=3", f"--output_dir={tmp_path}/bad"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("gpt: error: --n_embd=8 must be a multiple of --n_head=3.")
    (tmp_path / "a_file").write_text("")  # the flag's check, in this process (no JAX change)
    with pytest.raises(ValueError) as refused:
        common.use_compilation_cache(f"{tmp_path}/a_file")
    assert str(refused.value) == (f"--compilation_cache {tmp_path}/a_file is a file, not a "
                                  "folder; choose another --compilation_cache, or '' to "
                                  "compile afresh each time.")  # fmt: skip
