"""Type aliases shared across jaxnet."""

from typing import Any, Protocol

import jax
from jax.typing import ArrayLike, DTypeLike

Array = jax.Array
PyTree = Any
DenseParams = dict[str, jax.Array]  # {"w": [fan_in, fan_out], "b": [fan_out]} ("b" optional)
MLPParams = list[DenseParams]  # one DenseParams per layer, as from jaxnet.init_mlp
Params = PyTree  # any network's params: for a jaxnet.layers.serial, one entry per layer


class Initializer(Protocol):
    """An initializer: (key, shape, dtype) -> Array, like `jax.nn.initializers`."""

    def __call__(self, key: ArrayLike, shape: tuple[int, ...], dtype: DTypeLike = ...) -> Array: ...


__all__ = [
    "Array",
    "ArrayLike",
    "DTypeLike",
    "DenseParams",
    "Initializer",
    "MLPParams",
    "Params",
    "PyTree",
]
