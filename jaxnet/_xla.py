"""XLA compiler options shared by programs that run once, where compile time dominates."""

# XLA's backend optimisations and its CPU fusion emitters about double the compile time of a
# program that runs once, for no gain there (the gradient checker's battery: 4.4-6.0 s at
# level 0 alone, 2.5-3.1 s with all three, on 2 loaded cores; a GPT's init: see lm.build).
QUICK_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
    "xla_llvm_disable_expensive_passes": True,
}
