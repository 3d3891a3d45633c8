r"""Lesson 000: broadcasting and einsum, each checked against the plain operation.

Per-channel normalisation of an image batch [64, 3, 256, 256]: mean and std over axes
(0, 2, 3), broadcast back as [1, 3, 1, 1], checked against an explicit loop over channels.
Then einsum for transpose, matrix product and Gram matrix.

  python -m experiments.broadcasting
  python -m experiments.broadcasting --batch=8 --size=64
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import common

_BATCH = flags.DEFINE_integer("batch", 64, "Images in the batch.", lower_bound=1)
_SIZE = flags.DEFINE_integer("size", 256, "Height and width of each image.", lower_bound=2)
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_OUTPUT_DIR = common.define_path("output_dir", "runs/broadcasting", "Where results.json goes.")


def normalize_channels(images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(images - mean) / std per channel of [batch, channels, h, w], by broadcasting."""
    mean = jnp.mean(images, axis=(0, 2, 3))  # [channels]
    std = jnp.std(images, axis=(0, 2, 3), ddof=1)  # unbiased, as torch.std
    return (images - mean[None, :, None, None]) / std[:, None, None], mean, std


def normalize_channels_loop(images: jax.Array) -> jax.Array:
    """The same, one channel at a time: what broadcasting saves us from writing."""
    channels = []
    for c in range(images.shape[1]):
        x = images[:, c]
        channels.append((x - jnp.mean(x)) / jnp.std(x, ddof=1))
    return jnp.stack(channels, axis=1)


def einsum_checks(key) -> dict[str, float]:
    """Max |einsum - plain op| for transpose, matrix product and Gram matrix."""
    x_key, y_key = jax.random.split(key)
    x, y = jax.random.normal(x_key, (2, 3)), jax.random.normal(y_key, (3, 2))
    pairs = {
        "transpose ij->ji": (jnp.einsum("ij->ji", x), x.T),
        "matmul ik,kj->ij": (jnp.einsum("ik,kj->ij", x, y), x @ y),
        "gram ij,kj->ik": (jnp.einsum("ij,kj->ik", x, x), x @ x.T),
    }
    return {name: float(jnp.max(jnp.abs(a - b))) for name, (a, b) in pairs.items()}


def main(argv):
    del argv
    common.quiet_jax_logs()
    image_key, einsum_key = jax.random.split(jax.random.key(_SEED.value))
    images = jax.random.uniform(image_key, (_BATCH.value, 3, _SIZE.value, _SIZE.value))
    normalized, mean, std = jax.jit(normalize_channels)(images)
    loop_error = float(jnp.max(jnp.abs(normalized - normalize_channels_loop(images))))
    after = np.asarray(jnp.stack([jnp.mean(normalized, (0, 2, 3)), jnp.std(normalized, (0, 2, 3))]))
    print(f"images {images.shape}: channel mean {np.round(mean, 4)}, std {np.round(std, 4)}")
    print("broadcast as: mean[None, :, None, None] [1, 3, 1, 1], std[:, None, None] [3, 1, 1]")
    print(f"after: mean {np.round(after[0], 6)}, std {np.round(after[1], 6)}")
    print(f"max |broadcast - loop| = {loop_error:.3e}")
    einsum = einsum_checks(einsum_key)
    for name, error in einsum.items():
        print(f"einsum {name:18} max |einsum - plain| = {error:.3e}")
    results = dict(
        shape=list(images.shape), channel_mean=mean.tolist(), channel_std=std.tolist(),
        normalized_mean=after[0].tolist(), normalized_std=after[1].tolist(),
        max_abs_diff_broadcast_vs_loop=loop_error, einsum_max_abs_diff=einsum,
    )  # fmt: skip
    print("wrote", common.write_results(_OUTPUT_DIR.value, results))


if __name__ == "__main__":
    app.run(main)
