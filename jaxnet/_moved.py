"""Old module paths, kept importing: `jaxnet.trainer` is `jaxnet.training.job` itself.

Modules moved into `jaxnet.training` and `jaxnet.lessons`. A finder on `sys.meta_path`
answers each old name in `MOVED` with the module at its new path, the same object, imported
only when first asked for: `import jaxnet` imports none of them. No files stay at the old
paths.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys

MOVED = {
    "jaxnet.train": "jaxnet.training.loop",
    "jaxnet.trainer": "jaxnet.training.job",
    "jaxnet.run_config": "jaxnet.training.config",
    "jaxnet.checkpoint": "jaxnet.training.checkpoint",
    "jaxnet.data": "jaxnet.training.data",
    "jaxnet.parallel": "jaxnet.training.parallel",
    "jaxnet.files": "jaxnet.training.files",
    "jaxnet._signals": "jaxnet.training._signals",
    "jaxnet.matmul": "jaxnet.lessons.matmul",
    "jaxnet.ninja": "jaxnet.lessons.ninja",
    "jaxnet.bigram": "jaxnet.lessons.bigram",
    "jaxnet.names": "jaxnet.lessons.names",
    "jaxnet.makemore": "jaxnet.lessons.makemore",
    "jaxnet.stats": "jaxnet.lessons.stats",
    "jaxnet.reference": "jaxnet.lessons.reference",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name in MOVED; loads it as the module at the new name, imported then."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import system overwrites it next
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # its own spec back; nothing to run


def install() -> None:
    """Puts the finder first on sys.meta_path, once: an old name is always the moved module,
    never a stale file left at the old path (or found there by an editable install's finder).
    """
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
