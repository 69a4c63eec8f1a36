"""Process set-up: XLA's CPU flags, the hang they avoid, and the watchdog."""

import subprocess
import sys
import textwrap

import jax
import pytest

from dexjax import runtime

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def test_cpu_flags_are_added_once_and_user_values_win():
    assert runtime.cpu_xla_flags("") == f"{FLAG}=false"
    assert runtime.cpu_xla_flags("--xla_foo=1") == f"--xla_foo=1 {FLAG}=false"
    assert runtime.cpu_xla_flags(f"{FLAG}=true") == f"{FLAG}=true"
    twice = runtime.cpu_xla_flags(runtime.cpu_xla_flags(""))
    assert twice.count(FLAG) == 1


def _run(script: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_batched_mjx_hand_step_runs_repeatedly_without_hanging():
    """Regression: with jax 0.10.2 on CPU, a jitted vmap of the hand's MJX step at batch 128
    hung on its second call under XLA's concurrency-optimized scheduler. Run in a fresh
    process configured as every dexjax entry point is; a hang fails on the timeout."""
    script = """
        from dexjax import runtime
        runtime.configure_jax()
        import jax, jax.numpy as jnp, mujoco
        from mujoco import mjx
        from dexjax import scene
        m = scene.build_model(scene.SceneConfig(floor_contact=True))
        mx = mjx.put_model(m)
        d = mujoco.MjData(m)
        mujoco.mj_forward(m, d)
        batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (128,) + x.shape), mjx.put_data(m, d))
        step = jax.jit(jax.vmap(lambda d: mjx.step(mx, d)))
        for _ in range(5):
            batch = jax.block_until_ready(step(batch))
        print("ok", bool(jnp.all(jnp.isfinite(batch.qpos))))
    """
    result = _run(script, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # mujoco.mjx may print import notes (e.g. that Warp is not installed) first.
    assert result.stdout.strip().splitlines()[-1] == "ok True"


def test_watchdog_ends_a_stalled_process_with_tracebacks():
    script = """
        import time
        from dexjax import runtime
        with runtime.Watchdog(timeout_s=1) as watchdog:
            watchdog.beat()
            time.sleep(30)
    """
    result = _run(script, timeout=25)
    assert result.returncode != 0
    assert "time.sleep" in result.stderr or "Thread" in result.stderr


def test_watchdog_is_quiet_while_work_progresses():
    script = """
        import time
        from dexjax import runtime
        with runtime.Watchdog(timeout_s=2) as watchdog:
            for _ in range(6):
                time.sleep(0.5)
                watchdog.beat()
        print("done")
    """
    result = _run(script, timeout=25)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "done"


def test_configure_jax_again_after_start_is_harmless_but_new_flags_are_refused(monkeypatch):
    jax.numpy.zeros(1).block_until_ready()  # backends are up (conftest configured them)
    runtime.configure_jax()  # the flags are already in place: nothing to do
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_thunk_runtime=false")
    with pytest.raises(RuntimeError, match="before JAX is first used"):
        runtime.configure_jax()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_compiled_programs_hold_memory_maps_until_the_caches_are_cleared():
    """Why the suite and the experiment tables free compiled programs near the map limit:
    each compiled kernel holds memory maps, counted against `vm.max_map_count`. In a fresh
    process without the persistent cache, so the program really compiles."""
    script = """
        import jax, jax.numpy as jnp
        from dexjax import runtime
        def chain(x):
            outs = []
            for i in range(40):  # 40 scans that XLA cannot fuse: many kernels
                x = jnp.cumsum(jnp.sin(x) * i, axis=0)[::-1]
                outs.append(x)
            return outs
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
        before = runtime.memory_map_use() * limit
        jax.block_until_ready(jax.jit(chain)(jnp.ones((7, 3))))
        compiled = runtime.memory_map_use() * limit
        assert not runtime.free_compiled_programs_near_map_limit(threshold=1.0)
        kept = runtime.memory_map_use() * limit
        assert runtime.free_compiled_programs_near_map_limit(threshold=0.0)
        cleared = runtime.memory_map_use() * limit
        print(round(before), round(compiled), round(kept), round(cleared))
    """
    result = _run(script, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    before, compiled, kept, cleared = map(int, result.stdout.split()[-4:])
    counts = (before, compiled, kept, cleared)
    assert compiled - before >= 100, counts  # measured: about 200
    assert abs(kept - compiled) < 10, counts  # below the threshold nothing is freed
    assert compiled - cleared >= 100, counts  # measured: about 130
