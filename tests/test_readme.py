"""The README's examples run as written: every Python block that imports something, in order,
in one namespace (a later block may use what an earlier one defined, as a reader would)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
# Blocks that stand for a user's own project, not for code that runs here.
NOT_RUNNABLE = ("my_project",)


def runnable_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if "import " in b and not any(s in b for s in NOT_RUNNABLE)]


@pytest.mark.slow
def test_the_readme_examples_run(capsys):
    blocks = runnable_blocks()
    assert len(blocks) >= 6, "the README lost its examples"
    namespace = {"__name__": "readme"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md block {i}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - name the block that failed
            raise AssertionError(f"README block {i} failed:\n{block}") from e
