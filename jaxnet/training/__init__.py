"""Training infrastructure: what runs a job, not what a lesson teaches.

  job          the main job as a function: train_and_evaluate(Config, workdir) -> summary;
               Diverged, Interrupted (was jaxnet.trainer)
  config       Config.for_dataset(name, **overrides), DEFAULTS per dataset (was jaxnet.run_config)
  loop         jitted epochs (make_train_epoch, make_evaluate), TrainState, optimizers and
               schedules (was jaxnet.train)
  checkpoint   save / restore a TrainState atomically, restore_newest
  data         load("digits" | "mnist" | "fashion_mnist" | "synthetic"), validated readers
  parallel     make_mesh, replicated, sharded_batch, put, initialize (jax.distributed)
  files        atomic writes: write_bytes_atomic, write_json_atomic, atomic_writer, finite
  lock         one run per folder: acquire (a stale lock of a killed run is taken over),
               FolderLocked
  _signals     SIGTERM / SIGINT as a flag every process agrees on (internal)

Nothing is imported here: import the module you need, e.g. `from jaxnet.training import data`.
The old paths (`jaxnet.trainer`, `jaxnet.train`, ...) still import the same modules.
"""
