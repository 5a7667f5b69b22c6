"""The XLA settings of the suite's own processes, in a module with no imports (conftest.py sets them before jax
loads). Cheaper compiles, the same numerics: LLVM at optimisation level 0, and XLA's classic loop emitters
instead of its newer fusion emitters. Neither enables fast-math; every parity test holds with and without them.
"""

FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
