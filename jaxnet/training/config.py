"""A training run's settings: a frozen, validated `Config`, and each dataset's defaults.

Each field is the command-line flag of the same name in `experiments/train_mlp.py`, so an
error names the flag to change.
"""

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from jaxnet import _checks, initializers, layers, network
from jaxnet.training import data, loop

# The best settings we know for each dataset; `Config.for_dataset` starts from these. Each
# holds out a validation split for the per-epoch line: 10% of digits, 5000 of the 60000
# MNIST-family images; none of synthetic (64 examples of noise: a lesson in fitting them).
_MNIST_VALID = 5000 / 60000
DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(hidden=(256,), loss="cross_entropy", init="kaiming_normal", optimizer="adam",
                   learning_rate=3e-3, schedule="cosine", weight_decay=0.0, batch_size=64,
                   epochs=30, augment="none", label_smoothing=0.0, activation="relu",
                   norm="none", dropout=0.0, validation_fraction=0.1),
    "mnist": dict(hidden=(1024, 1024), loss="cross_entropy", init="kaiming_normal",
                  optimizer="adamw", learning_rate=1e-3, schedule="cosine", weight_decay=1e-4,
                  batch_size=256, epochs=12, augment="none", label_smoothing=0.0,
                  activation="relu", norm="none", dropout=0.0,
                  validation_fraction=_MNIST_VALID),
    "fashion_mnist": dict(hidden=(512, 512), loss="cross_entropy", init="kaiming_normal",
                          optimizer="adamw", learning_rate=3e-3, schedule="cosine",
                          weight_decay=0.05, batch_size=128, epochs=16, augment="flip",
                          label_smoothing=0.1, activation="relu", norm="batch", dropout=0.0,
                          validation_fraction=_MNIST_VALID),
    "synthetic": dict(hidden=(100,), loss="mse", init="torch_default", optimizer="adam",
                      learning_rate=1e-3, schedule="constant", weight_decay=0.0, batch_size=64,
                      epochs=500, augment="none", label_smoothing=0.0, activation="relu",
                      norm="none", dropout=0.0, validation_fraction=0.0),
}  # fmt: skip

# --activation: each a jaxnet.layers constructor; general_relu with fast.ai's leak and sub.
ACTIVATIONS: dict[str, Callable[[], layers.Layer]] = {
    "relu": layers.relu,
    "leaky_relu": functools.partial(layers.leaky_relu, 0.01),
    "general_relu": functools.partial(layers.general_relu, leak=0.1, sub=0.4),
    "tanh": layers.tanh,
    "gelu": layers.gelu,
}
NORMS: dict[str, Callable[[], layers.Layer] | None] = {
    "none": None, "batch": layers.batch_norm, "layer": layers.layer_norm,
}  # fmt: skip

# Fields that say how a run is carried out, not what it computes: a resumed run may change
# them, and checkpoints and summaries do not record them.
_RUN_FIELDS = ("data_dir", "download", "checkpoint_every", "resume", "stop_after_epoch")


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run; each field is the command-line flag of the same name.

    Built with `Config.for_dataset(name, **overrides)` (the dataset's `DEFAULTS`, then the
    overrides). Every field is checked on construction, its type strictly (a bool is no int,
    a string no number; numpy scalars become Python's) and then its range.
    """

    dataset: str = "digits"
    hidden: tuple[int, ...] = (256,)
    loss: str = "cross_entropy"
    init: str = "kaiming_normal"
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 30
    augment: str = "none"
    label_smoothing: float = 0.0
    clip_grad_norm: float = 0.0  # 0: no clipping
    activation: str = "relu"
    norm: str = "none"  # after each hidden dense layer, before its activation
    dropout: float = 0.0  # after each hidden activation
    grad: str = "fused"
    seed: int = 0
    validation_fraction: float = 0.0
    data_dir: str | None = None
    download: bool = True
    checkpoint_every: int = 1  # 0: only at the end
    resume: bool = False
    stop_after_epoch: int = 0  # 0: never

    @classmethod
    def for_dataset(cls, dataset: str, **overrides) -> "Config":
        """The dataset's DEFAULTS, then overrides; a non-cross_entropy loss gets no smoothing."""
        if dataset not in DEFAULTS:
            raise ValueError(f"--dataset={dataset!r} is not one of {list(DEFAULTS)}.")
        settings = {**DEFAULTS[dataset], **overrides}
        if settings["loss"] != "cross_entropy" and "label_smoothing" not in overrides:
            settings["label_smoothing"] = 0.0  # the dataset's default is for cross_entropy
        return cls(dataset=dataset, **settings)

    def __post_init__(self):
        for name, convert in _TYPES.items():
            object.__setattr__(self, name, convert(name, getattr(self, name)))
        for problem in _problems(self):
            raise ValueError(problem)
        _checks.label_smoothing(self.label_smoothing, self.loss)

    def recorded(self) -> dict[str, Any]:
        """What the run computes (no run-control fields), as JSON-ready values."""
        fields = dataclasses.asdict(self)
        return {k: list(v) if k == "hidden" else v for k, v in fields.items()
                if k not in _RUN_FIELDS}  # fmt: skip


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _as_value_error(check: Callable) -> Callable[[str, Any], Any]:
    """check(value, "--name") with its TypeError raised as ValueError, as Config's others."""

    def checked(name: str, value):
        try:
            return check(value, f"--{name}")
        except TypeError as e:
            raise ValueError(str(e)) from None

    return checked


def _int(name: str, value) -> int:
    if _is_int(value):
        return int(value)
    raise ValueError(f"--{name}={value!r} must be an int, not {type(value).__name__}.")


def _string(name: str, value) -> str:
    if isinstance(value, str) and value:
        return value
    raise ValueError(
        f"--{name}={value!r} must be a non-empty string, e.g. {getattr(Config, name)!r}."
    )


def _folder(name: str, value) -> str | None:
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if value is None or (isinstance(path, str) and path):
        return path
    raise ValueError(f"--{name}={value!r} must be a folder's path, or None for the default places.")


def _widths(name: str, value) -> tuple[int, ...]:
    ok = isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) > 0
    if ok and all(_is_int(w) and w > 0 for w in value):
        return tuple(int(w) for w in value)
    shown = list(value) if isinstance(value, (list, tuple)) else value
    raise ValueError(f"--{name}={shown!r} must list positive widths (ints), e.g. (256, 128).")


# Each field's type check, which also converts numpy scalars to Python's own.
_TYPES: dict[str, Callable[[str, Any], Any]] = {
    **dict.fromkeys(("dataset", "loss", "init", "optimizer", "schedule", "augment",
                     "activation", "norm", "grad"), _string),
    **dict.fromkeys(("learning_rate", "weight_decay", "label_smoothing", "clip_grad_norm",
                     "dropout", "validation_fraction"), _as_value_error(_checks.number)),
    **dict.fromkeys(("batch_size", "epochs", "seed", "checkpoint_every", "stop_after_epoch"),
                    _int),
    **dict.fromkeys(("download", "resume"), _as_value_error(_checks.boolean)),
    "hidden": _widths,
    "data_dir": _folder,
}  # fmt: skip


def _choice(config: Config, name: str, choices) -> str | None:
    value = getattr(config, name)
    return None if value in choices else f"--{name}={value!r} is not one of {sorted(choices)}."


def _at_least(config: Config, name: str, low, high=float("inf")) -> str | None:
    value = getattr(config, name)
    return None if low <= value <= high else f"--{name}={value} must lie in [{low}, {high}]."


def _problems(config: Config) -> Iterator[str]:
    """Every field that is out of range, as one line each."""
    yield from filter(None, [
        _choice(config, "dataset", data.DATASETS),
        _choice(config, "loss", ("cross_entropy", "mse")),
        _choice(config, "init", initializers.INITIALIZERS),
        _choice(config, "schedule", loop.SCHEDULES),
        _choice(config, "augment", ("none", "flip")),
        _choice(config, "grad", network.GRADS),
        _choice(config, "activation", ACTIVATIONS), _choice(config, "norm", NORMS),
        _at_least(config, "learning_rate", 0.0), _at_least(config, "weight_decay", 0.0),
        _at_least(config, "clip_grad_norm", 0.0), _at_least(config, "batch_size", 1),
        _at_least(config, "epochs", 1), _at_least(config, "validation_fraction", 0.0, 0.5),
        _at_least(config, "checkpoint_every", 0), _at_least(config, "stop_after_epoch", 0),
        _at_least(config, "seed", 0, 2**63 - 1),
    ])  # fmt: skip
    if not 0 <= config.dropout < 1:
        yield f"--dropout={config.dropout} must lie in [0, 1)."
    loop.make_optimizer(config.optimizer, 1e-3)  # raises, naming the nearest optimizers


def _flag(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def check_same(now: dict, then: dict, defaults: dict, used) -> None:
    """Refuses to go on with a run whose recorded flags (`then`, read from `used`) differ
    from `now`, naming each difference; a key `then` lacks had its value in `defaults`."""
    changed = [f"--{k}={_flag(then.get(k, defaults[k]))} (now {_flag(now[k])})"
               for k in sorted(now) if then.get(k, defaults[k]) != now[k]]  # fmt: skip
    if changed:
        raise ValueError(f"{used} was written with other flags: {', '.join(changed)}. Run "
                         "with its flags to continue it or see its summary, add --overwrite "
                         "to replace it, or choose another --output_dir.")  # fmt: skip
