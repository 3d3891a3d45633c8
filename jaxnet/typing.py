"""Type aliases shared across jaxnet."""

from typing import Any, Protocol

import jax
from jax.typing import ArrayLike, DTypeLike

Array = jax.Array
Layer = dict[str, jax.Array]  # {"w": [fan_in, fan_out], "b": [fan_out]} ("b" optional)
Params = list[Layer]
PyTree = Any


class Initializer(Protocol):
    """An initializer: (key, shape, dtype) -> Array, like `jax.nn.initializers`."""

    def __call__(self, key: ArrayLike, shape: tuple[int, ...], dtype: DTypeLike = ...) -> Array: ...


__all__ = ["Array", "ArrayLike", "DTypeLike", "Initializer", "Layer", "Params", "PyTree"]
