"""What every experiment script shares: quiet start-up, results files, plots."""

import io
import logging

from jaxnet.training import files


def quiet_jax_logs() -> None:
    """Hides JAX's INFO lines about absent backends (TPU, GPU), which absl would print."""
    logging.getLogger("jax").setLevel(logging.WARNING)


def write_results(output_dir: str, results: dict) -> str:
    """Writes `<output_dir>/results.json` atomically and returns its path."""
    return str(files.write_json_atomic(f"{output_dir}/results.json", results))


def write_file(path: str, data: bytes) -> str:
    """Writes bytes atomically and returns the path."""
    return str(files.write_bytes_atomic(path, data))


def save_png(fig, path) -> str:
    """Writes a matplotlib figure to path as PNG, atomically, closes it; returns the path."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return write_file(str(path), buffer.getvalue())
