"""The lessons' code: what a course teaches, built on the core (layers, losses, network).

  reference    the MLP in plain jax.numpy, for jax.grad: the tests' oracle
  matmul       lesson 003: the matmul ladder, from three Python loops to one library call
  stats        fast.ai's activation statistics: probe() (a layer), verdict(stds)
  names        makemore: the US Census name lists, split, windows, sample
  bigram       makemore part 1: the counting bigram model
  ninja        makemore part 4: every gradient of the MLP by hand (backprop ninja)
  makemore     makemore parts 2-5: the MLP on jaxnet.layers, trained on the fused VJP

Nothing is imported here: import the module you need, e.g. `from jaxnet.lessons import names`.
The old paths (`jaxnet.matmul`, `jaxnet.names`, ...) still import the same modules.
"""
