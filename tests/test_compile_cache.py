"""JAX's persistent compilation cache only helps if a program lowers to the same text in
every process.

A jitted function that closes over an array bakes the array's values into the program as a
constant. MuJoCo Warp's `put_data` leaves `contact.geomcollisionid` uninitialized, so a
program closing over the vision scene's Warp data held different bytes in each process and
missed the cache (a full recompile of an evaluation with rendering, minutes on CPU).
`render.warp_data` zeroes that field (used by the video renderer and the vision scene), and
`evaluate.record_trial` passes the scene in as an argument; these tests lower a program that
closes over the scene in two fresh processes with different string-hash seeds, and compare
the two. (Fresh processes, as a new `dexjax` command is: names of host callbacks count
those made earlier in the process, so a test process that rendered before lowers other
names.)

Programs of the C physics backend call MuJoCo on the host; XLA never caches a program that
holds a Python callback, so they call named FFI targets instead (`dexjax.host_calls`). A
second process loads the C backend's environment step from the cache the first wrote.
"""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from dexjax import env as env_lib
from dexjax import randomization
from dexjax import render as video
from dexjax.vision import render

BATCH = 2


def lowered_render_text() -> str:
    """StableHLO (without source locations) of a jitted render that closes over the scene.

    Everything a program can hold as a constant comes from `make_scene` and the env's
    model; source locations are left out because they legitimately name this process's
    file paths and line numbers, and JAX's cache key strips them too.
    """
    env = env_lib.make_env(settle_steps=1, randomization=randomization.preset("none"))
    renderer = render.VisionRenderer(env.mj_model, render.VisionConfig(width=16, height=16), 2)
    scene, context, config = renderer.scene, renderer.context, renderer.config

    def draw(key, qpos, mocap_quat):
        return render.render_images(scene, context, config, key, qpos, mocap_quat)

    m = env.mj_model
    qpos = jnp.zeros((BATCH, m.nq), jnp.float32)
    mocap_quat = jnp.zeros((BATCH, m.nmocap, 4), jnp.float32)
    lowered = jax.jit(draw).lower(jax.random.key(0), qpos, mocap_quat)
    return lowered.as_text(debug_info=False)


_CHILD = """
import runpy, sys
from dexjax import runtime
runtime.configure_jax()
text = runpy.run_path(sys.argv[1])["lowered_render_text"]()
open(sys.argv[2], "w").write(text)
"""


def test_warp_data_has_no_uninitialized_field():
    env = env_lib.make_env(settle_steps=1, randomization=randomization.preset("none"))
    host = mujoco.MjData(env.mj_model)
    mujoco.mj_forward(env.mj_model, host)
    video_ids = np.asarray(video.warp_data(env.mj_model, host)._impl.contact__geomcollisionid)
    scene = render.make_scene(render.build_render_model(env.mj_model))
    scene_ids = np.asarray(scene.data._impl.contact__geomcollisionid)
    assert video_ids.size > 0 and scene_ids.size > 0
    np.testing.assert_array_equal(video_ids, 0)
    np.testing.assert_array_equal(scene_ids, 0)


def test_render_program_is_the_same_in_another_process(tmp_path):
    # Two string-hash seeds, so that set and dict orders, and the allocation pattern that
    # decides what uninitialized memory holds, differ between the processes.
    texts = []
    for seed in ("1", "2"):
        out = tmp_path / f"child-{seed}.mlir"
        subprocess.run(
            [sys.executable, "-c", _CHILD, str(pathlib.Path(__file__)), str(out)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
            timeout=600,
        )
        texts.append(out.read_text())
    here, there = texts
    assert "stablehlo" in here
    if there != here:
        lines = zip(here.splitlines(), there.splitlines(), strict=False)
        diff = [(i, a[:200], b[:200]) for i, (a, b) in enumerate(lines) if a != b]
        pytest.fail(
            f"the lowered programs differ ({len(here)} vs {len(there)} characters); "
            f"first differing lines (index, here, there): {diff[:3]}"
        )


_C_STEP_CHILD = """
import sys
from dexjax import runtime
runtime.configure_jax(sys.argv[1])
import jax
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
events = []
jax.monitoring.register_event_listener(lambda event, **kwargs: events.append(event))
from dexjax import env as env_lib
env = env_lib.make_env(backend="c", settle_steps=1)
state = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 2))
action = jax.numpy.zeros((2, env.action_size))
step = jax.jit(jax.vmap(env.step))
events.clear()
state = jax.block_until_ready(step(state, action))
hits = events.count("/jax/compilation_cache/cache_hits")
misses = events.count("/jax/compilation_cache/cache_misses")
print(f"hits {hits} misses {misses} finite {bool(jax.numpy.isfinite(state.obs['state']).all())}")
"""


def test_a_c_backend_step_compiled_in_one_process_is_loaded_by_the_next(tmp_path):
    lines = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", _C_STEP_CHILD, str(tmp_path / "cache")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        lines.append(result.stdout.strip().splitlines()[-1])
    assert lines == ["hits 0 misses 1 finite True", "hits 1 misses 0 finite True"]
