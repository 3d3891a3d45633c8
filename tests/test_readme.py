"""The README's newest how-to sections run as written: each section's Python blocks, in order,
in one namespace (a later block may use what an earlier one defined, as a reader would).

The older sections' examples are exercised by the tests of what they show (test_mlp,
test_layers, test_gradcheck_layer); running every block costs the suite about 50 s of CPU.
"""

import re
from pathlib import Path

import pytest

from jaxnet import text

README = Path(__file__).resolve().parent.parent / "README.md"
SECTIONS = (
    "A jaxnet block in your own model",
    "Inside flax.nnx and equinox",
    "Write your own loss",
    "A GPT trained by hand VJPs on real text",
)


def section_blocks(title: str) -> list[str]:
    """The runnable Python blocks of the README section called title (up to the next ##)."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)
    return [b for b in blocks if "import " in b]


@pytest.mark.parametrize("title", SECTIONS)
def test_the_readme_section_runs_as_written(title):
    if title.startswith("Inside"):
        pytest.importorskip("flax")
        pytest.importorskip("equinox")
    if title.startswith("A GPT") and not text.FORTUNES_DIR.is_dir():
        pytest.skip(f"the example reads Debian's fortunes: {text.INSTALL}")
    blocks = section_blocks(title)
    assert blocks, f"README section {title!r} lost its examples"
    namespace = {"__name__": "readme"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md {title}, block {i}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - name the block that failed
            raise AssertionError(f"README section {title!r}, block {i} failed:\n{block}") from e
