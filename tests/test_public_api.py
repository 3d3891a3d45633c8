"""The public API, pinned: a name added, renamed or removed fails here until this list says so.

A change to what users import is a conscious one: update PUBLIC in the same commit, and say
why in its message. Modules whose names start with an underscore are internal and free to
change. Regenerate the list with the loop in `test_the_public_api_is_exactly_this`.
"""

import importlib
import inspect
import pkgutil

import jaxnet


def public_names(module) -> list[str]:
    """`__all__` where a module has one; else what it defines without a leading underscore."""
    if hasattr(module, "__all__"):
        return sorted(module.__all__)
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and getattr(value, "__module__", module.__name__) == module.__name__
    )


def public_modules() -> list[str]:
    found = pkgutil.walk_packages(jaxnet.__path__, "jaxnet.")
    return sorted(m.name for m in found if not any(p.startswith("_") for p in m.name.split(".")))


PUBLIC = {
    "jaxnet.layers.activations": ["gelu", "general_relu", "leaky_relu", "relu", "tanh"],
    "jaxnet.layers.core": [
        "Layer",
        "LayerError",
        "apply",
        "check_fits",
        "check_float",
        "combinator",
        "elementwise",
        "init",
        "plain",
        "require_layer",
        "residual",
        "run",
        "serial",
        "stateless_init",
    ],
    "jaxnet.interop": ["eqx_layer", "eqx_module", "nnx_module"],
    "jaxnet.layers.dense": ["dense"],
    "jaxnet.layers.attention": ["attention"],
    "jaxnet.layers.embedding": ["embedding", "flatten", "position_embedding", "tied_embedding"],
    "jaxnet.gpt": ["count_parameters", "decay_mask", "generate", "gpt", "make_generate"],
    "jaxnet.training.lm": [
        "Diverged",
        "GPTConfig",
        "GRADS",
        "Model",
        "RESULTS",
        "build",
        "fingerprint",
        "learning_rate",
        "optimizer",
        "train_gpt",
    ],
    "jaxnet.layers.norms": ["batch_norm", "layer_norm"],
    "jaxnet.layers.reversible": ["reversible"],
    "jaxnet.layers.stochastic": ["bernoulli_gate", "dropout"],
    "jaxnet.vjp": ["from_rules", "layer", "loss", "network_loss"],
    "jaxnet": [
        "forward_and_backward",
        "gradcheck",
        "init_mlp",
        "initializers",
        "layers",
        "losses",
        "mlp",
        "mlp_loss",
        "mlp_network",
        "network_fn",
        "network_loss",
        "ops",
        "reference",
        "text",
    ],
    "jaxnet.text": [
        "CORPORA",
        "Corpus",
        "FORTUNES_DIR",
        "INSTALL",
        "MIN_CHARS",
        "MIN_VAL",
        "TRAIN_FRACTION",
        "TextError",
        "fortunes_files",
        "fortunes_text",
        "from_string",
        "load",
        "read_text",
    ],
    "jaxnet.lessons.bigram": ["counts", "fit", "loss"],
    "jaxnet.training.checkpoint": [
        "CheckpointError",
        "WRITE_DELAY_ENV",
        "read_meta",
        "restore",
        "restore_newest",
        "restore_run",
        "rotated_paths",
        "save",
    ],
    "jaxnet.training.data": [
        "CACHE_ENV",
        "DATASETS",
        "DataError",
        "Dataset",
        "IDX_FILES",
        "Normalizer",
        "SHA256",
        "download",
        "find_idx_files",
        "fit_normalizer",
        "load",
        "load_idx_folder",
        "load_npz",
        "load_pickle",
        "random_flip",
        "read_idx",
        "validation_split",
    ],
    "jaxnet.training.files": [
        "atomic_writer",
        "finite",
        "parse_json",
        "read_run_record",
        "remove_temporaries",
        "write_bytes_atomic",
        "write_json_atomic",
    ],
    "jaxnet.training.lock": [
        "FolderLocked",
        "LOCK_NAME",
        "Lock",
        "acquire",
        "check_output_folder",
        "claim",
    ],
    "jaxnet.gradcheck": [
        "Comparison",
        "FiniteDifferenceCheck",
        "GradcheckError",
        "GradientMismatchError",
        "LeafComparison",
        "LeafFiniteDifference",
        "Report",
        "Residuals",
        "Row",
        "TRANSFORMS",
        "assert_close",
        "assert_vjp",
        "check",
        "check_layer",
        "check_vjp",
        "compare",
        "tolerances",
    ],
    "jaxnet.gradcheck.tolerances": [
        "FD64_STEP",
        "SECOND_ORDER_FACTOR",
        "TOLERANCES",
        "Tolerance",
        "elementwise_error",
        "for_dtype",
        "scaled",
    ],
    "jaxnet.initializers": [
        "INITIALIZERS",
        "fans",
        "gain",
        "get",
        "glorot_normal",
        "glorot_uniform",
        "kaiming_normal",
        "kaiming_uniform",
        "lecun_normal",
        "lsuv",
        "normal",
        "orthogonal",
        "torch_default",
        "torch_default_bias",
        "zeros",
    ],
    "jaxnet.layers": [
        "Layer",
        "LayerError",
        "apply",
        "attention",
        "batch_norm",
        "bernoulli_gate",
        "dense",
        "dropout",
        "embedding",
        "flatten",
        "gelu",
        "general_relu",
        "init",
        "layer_norm",
        "leaky_relu",
        "plain",
        "position_embedding",
        "relu",
        "residual",
        "reversible",
        "run",
        "serial",
        "tanh",
        "tied_embedding",
    ],
    "jaxnet.losses": [
        "Loss",
        "NAMES",
        "as_op",
        "cross_entropy",
        "get",
        "log_softmax",
        "mse",
        "sum_squares",
    ],
    "jaxnet.lsuv": ["rescale", "unit_std"],
    "jaxnet.lessons.makemore": [
        "BATCH_NORM",
        "Model",
        "calibrate",
        "from_lecture",
        "logits_fn",
        "loss",
        "make_train_chunk",
        "model",
        "nll",
    ],
    "jaxnet.lessons.matmul": [
        "LADDER",
        "broadcast",
        "einsum",
        "fori_loops",
        "matmul",
        "python_loops",
        "row_times_column",
    ],
    "jaxnet.mlp": ["forward_and_backward", "init_mlp", "mlp", "mlp_loss", "mlp_network"],
    "jaxnet.lessons.names": [
        "ALPHABET",
        "FILES",
        "INSTALL",
        "NamesError",
        "PACKAGE",
        "SPLIT_SEED",
        "VOCAB",
        "Windows",
        "clean",
        "decode",
        "encode",
        "load",
        "sample",
        "split",
        "windows",
    ],
    "jaxnet.network": [
        "GRADS",
        "apply_ops",
        "check_call",
        "check_params",
        "leaf_op",
        "network_fn",
        "network_loss",
    ],
    "jaxnet.lessons.ninja": [
        "EPS",
        "INTERMEDIATES",
        "ORDER",
        "PARAMS",
        "Row",
        "autodiff",
        "backward",
        "batch_norm_backward",
        "cmp",
        "cross_entropy_backward",
        "forward",
        "fused_grads",
        "init_params",
        "table",
        "zero_taps",
    ],
    "jaxnet.ops": [
        "attention_backward",
        "attention_forward",
        "dot_product_attention",
        "linear",
        "linear_backward",
        "log_softmax",
        "mse",
        "relu",
        "relu_backward",
        "softmax_cross_entropy",
        "sum_squares",
    ],
    "jaxnet.training.parallel": [
        "AXIS",
        "assert_same_on_all_processes",
        "check_batch_size",
        "cpu_cores",
        "initialize",
        "make_mesh",
        "put",
        "replicated",
        "sharded_batch",
        "split_cpu",
    ],
    "jaxnet.profiling": ["dot_signatures", "kernel_counts", "op_kinds", "time_by_kind"],
    "jaxnet.lessons.reference": [
        "EPS",
        "LOSSES",
        "MOMENTUM",
        "bn_tanh_net_loss",
        "causal_self_attention",
        "gpt_loss",
        "layer_norm",
        "linear",
        "ln_gelu_net_loss",
        "log_softmax",
        "mlp",
        "mlp_loss",
        "mse",
        "nanogpt_loss",
        "relu",
        "relu_net_loss",
        "softmax_cross_entropy",
        "sum_squares",
    ],
    "jaxnet.training.config": ["ACTIVATIONS", "Config", "DEFAULTS", "NORMS", "check_same"],
    "jaxnet.lessons.stats": [
        "HOLDS",
        "Moments",
        "VERDICTS",
        "Verdict",
        "chain_stds",
        "chain_weights",
        "first_out_of_band",
        "fixed_scale",
        "moments",
        "probe",
        "safe_moments",
        "verdict",
    ],
    "jaxnet.testing": [
        "FLOAT_DTYPES",
        "arrays",
        "assert_layer_correct",
        "assert_vjp_correct",
        "dtypes",
        "params",
        "shapes",
    ],
    "jaxnet.timing": ["interleaved_medians", "interleaved_times", "median_seconds", "ratio_spread"],
    "jaxnet.training.loop": [
        "OPTIMIZERS",
        "SCHEDULES",
        "TrainState",
        "batches_per_epoch",
        "epoch_indices",
        "example_losses",
        "first_nonfinite",
        "fit_full_batch",
        "hand_sgd",
        "init_state",
        "make_evaluate",
        "make_optimizer",
        "make_schedule",
        "make_train_epoch",
        "make_training_optimizer",
        "pad_rows",
    ],
    "jaxnet.training.job": [
        "Diverged",
        "Interrupted",
        "build",
        "gradient_check",
        "network",
        "prepare",
        "read_metrics",
        "summary_line",
        "train_and_evaluate",
    ],
    "jaxnet.lessons": [],
    "jaxnet.training": [],
    "jaxnet.typing": [
        "Array",
        "ArrayLike",
        "DTypeLike",
        "DenseParams",
        "Initializer",
        "MLPParams",
        "Params",
        "PyTree",
    ],
}


def test_the_public_api_is_exactly_this():
    got = {"jaxnet": public_names(jaxnet)}
    got.update({name: public_names(importlib.import_module(name)) for name in public_modules()})
    assert sorted(got) == sorted(PUBLIC), "public modules changed: update PUBLIC"
    for module, names in PUBLIC.items():
        added, removed = set(got[module]) - set(names), set(names) - set(got[module])
        assert not added and not removed, (
            f"{module}: added {sorted(added)}, removed {sorted(removed)}"
        )


def test_every_name_in_all_exists():
    for name in ["jaxnet", *public_modules()]:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            assert hasattr(module, attr), f"{name}.__all__ names {attr!r}, which it lacks"


def test_no_module_shadows_the_standard_library():
    import sys

    for name in public_modules():
        assert name.split(".")[-1] not in sys.stdlib_module_names or name.endswith(".typing"), name


def test_every_old_module_path_is_the_moved_module_itself():
    """`jaxnet.trainer` and the other flat paths of before the move still import, lazily."""
    import subprocess
    import sys
    from pathlib import Path

    from jaxnet import _moved

    for old, new in _moved.MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
        parent, _, child = old.rpartition(".")
        assert getattr(importlib.import_module(parent), child) is importlib.import_module(new)
        assert importlib.import_module(old).__spec__.name == new, old
    code = (
        "import sys, jaxnet\n"
        "moved = ('jaxnet.training', 'jaxnet.lessons.')\n"
        "loaded = [m for m in sys.modules if m.startswith(moved)]\n"
        "assert loaded == ['jaxnet.lessons.reference'], loaded  # light, and jaxnet.reference\n"
        "import jaxnet.trainer as t, jaxnet.training.job as j\n"
        "from jaxnet import data\n"
        "assert t is j and data is sys.modules['jaxnet.training.data']\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
