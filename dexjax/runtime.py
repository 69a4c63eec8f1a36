"""Process-level JAX set-up for dexjax's entry points (CLI, benchmarks, tests).

Library modules never call these: only a program's entry point decides how its process
runs. Call `configure_jax()` before the first JAX computation.
"""

import faulthandler
import os
import pathlib
import sys

# With jax 0.10.2 on CPU, a jitted vmap of MJX steps over many contact pairs can hang on
# its second call (all threads idle in a futex wait) under XLA's concurrency-optimized
# CPU scheduler. Turning that scheduler off avoids the hang; tests/test_runtime.py keeps
# a regression check.
CPU_XLA_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)

DEFAULT_CACHE_DIR = pathlib.Path.home() / ".cache" / "dexjax" / "jax-compilation-cache"


def cpu_xla_flags(existing: str = "") -> str:
    """`existing` XLA_FLAGS with dexjax's CPU flags added (user-set values win)."""
    flags = existing.split()
    for flag in CPU_XLA_FLAGS:
        name = flag.split("=")[0]
        if not any(f.split("=")[0] == name for f in flags):
            flags.append(flag)
    return " ".join(flags)


def configure_jax(cache_dir: str | os.PathLike | None = None) -> None:
    """Set XLA's CPU flags and turn on the persistent compilation cache.

    Must run before JAX initializes its backends (XLA reads XLA_FLAGS once); calling it
    again later, as the CLI does when a test or notebook runs it in-process, is harmless
    as long as the flags were already set.
    """
    flags = cpu_xla_flags(os.environ.get("XLA_FLAGS", ""))
    if "jax" in sys.modules:
        import jax

        initialized = jax._src.xla_bridge.backends_are_initialized()  # noqa: SLF001
        if initialized and flags != os.environ.get("XLA_FLAGS"):
            raise RuntimeError("configure_jax() must be called before JAX is first used")
    os.environ["XLA_FLAGS"] = flags

    import jax

    path = pathlib.Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def memory_map_use() -> float | None:
    """Fraction of this process's memory-map limit in use (Linux), or None elsewhere.

    XLA's CPU backend holds about three memory maps per compiled kernel (code, constants,
    data pages), and an MJX step has over a thousand kernels. A process that keeps
    compiling new programs (a test session, a table of experiments) therefore approaches
    the kernel's per-process limit, `vm.max_map_count` (65,530 by default), and then
    aborts inside LLVM ("Unable to allocate section memory"). `jax.clear_caches()` frees
    the compiled programs and their maps; the persistent cache makes a later reload cheap.
    """
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
        with open("/proc/self/maps") as f:
            used = sum(1 for _ in f)
    except OSError:
        return None
    return used / limit


def free_compiled_programs_near_map_limit(threshold: float = 0.5) -> bool:
    """`jax.clear_caches()` once `memory_map_use()` passes `threshold`; True if it did.

    For processes that compile one program after another (the test session, the
    experiment tables, a notebook trying many configs): call it between pieces of work.
    """
    import gc

    import jax

    use = memory_map_use()
    if use is None or use <= threshold:
        return False
    jax.clear_caches()
    gc.collect()
    return True


class Watchdog:
    """Ends the process loudly (with every thread's traceback) if progress stops.

    Call `beat()` whenever work advances; if `timeout_s` passes without a beat the
    tracebacks go to stderr and the process exits, instead of hanging forever.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s

    def beat(self) -> None:
        faulthandler.dump_traceback_later(self.timeout_s, exit=True)

    def __enter__(self) -> "Watchdog":
        self.beat()
        return self

    def __exit__(self, *exc) -> None:
        faulthandler.cancel_dump_traceback_later()
