"""What every experiment script shares: quiet start-up and its results file."""

import logging

from jaxnet import io


def quiet_jax_logs() -> None:
    """Hides JAX's INFO lines about absent backends (TPU, GPU), which absl would print."""
    logging.getLogger("jax").setLevel(logging.WARNING)


def write_results(output_dir: str, results: dict) -> str:
    """Writes `<output_dir>/results.json` atomically and returns its path."""
    return str(io.write_json_atomic(f"{output_dir}/results.json", results))
