"""What every experiment script shares: quiet start-up, results files, plots."""

import io
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jax
from absl import flags

from jaxnet.training import files, lock

T = TypeVar("T")


def quiet_jax_logs() -> None:
    """Hides JAX's INFO lines about absent backends (TPU, GPU), which absl would print."""
    logging.getLogger("jax").setLevel(logging.WARNING)


class _PathParser(flags.ArgumentParser):
    """A flag naming a file or folder: a leading ~ is the user's home folder, as a shell
    expands it in `--output_dir ~/runs` but not in `--output_dir=~/runs`."""

    syntactic_help = "a path; a leading ~ is your home folder"

    def parse(self, argument):
        if not isinstance(argument, str):
            raise ValueError(f"{argument!r} is not a path")
        return os.path.expanduser(argument)

    def flag_type(self) -> str:
        return "string"


def define_path(name: str, default: str | None, help: str,
                flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagHolder:  # fmt: skip
    """A string flag for a path (`flags.DEFINE_string`'s place), `~` expanded."""
    return flags.DEFINE(_PathParser(), name, default, help, flag_values,
                        serializer=flags.ArgumentSerializer())  # fmt: skip


def use_compilation_cache(folder: str, flag: str = "--compilation_cache") -> None:
    """Turns on JAX's persistent compilation cache in folder ('' leaves it as it is): a later
    command that compiles the same programs loads them from there instead. Every program
    is kept, however quickly it compiled; entries are never removed (delete the folder to
    empty it). Call it before the first compile.

    Raises:
      ValueError: folder is a file, cannot be made, or is not writable (flag names it).
    """
    if not folder:
        return
    path = Path(folder).expanduser()
    lock.check_output_folder(path, flag, otherwise=", or '' to compile afresh each time")
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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


def run_or_exit(script: str, job: Callable[[], T], output_dir: str, interrupted: type) -> T:
    """job(), a training run in output_dir; its failures turned into a one-line exit.

    A checkpointed stop (`interrupted`, with .signum) exits 128 + the signal; a second
    Ctrl-C at once; bad input or settings (ValueError, RuntimeError, OSError) with
    "<script>: error: <message>".
    """
    try:
        return job()
    except interrupted as e:
        print(f"{script}: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        sys.exit(f"{script}: stopped at once, with no new checkpoint; the same command goes "
                 f"on from the last one in {output_dir} (if any).")  # fmt: skip
    except (ValueError, RuntimeError, OSError) as e:
        sys.exit(f"{script}: error: {e}")
