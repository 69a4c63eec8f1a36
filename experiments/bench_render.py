"""Camera images per second: dexjax's MJX (MuJoCo Warp) renderer against MuJoCo's OpenGL one.

python experiments/bench_render.py --json experiments/results/vision/bench_render.json

Both draw the render variant of the scene (dexjax.vision.render) from the three cameras, at
64x64 and at the paper's 200x200, from the same states (the hand's nominal pose with random
finger bends and object poses). dexjax is measured with randomization on (every image
gets its own colours, textures, lights, camera jitter, contrast and noise) and off.
The peer, `mujoco.Renderer`, runs in a child process (MUJOCO_GL must be set before MuJoCo
is imported), one image at a time, nominal look only; if no OpenGL backend can start, the
JSON says why instead of giving a number. Rates are after compilation; the machine's load
average is recorded because other work shares its cores.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

CAMERAS = ("cam_left", "cam_right", "cam_top")


def _states(count: int, seed: int = 0) -> np.ndarray:
    """qpos [count, nq]: random bends of the hand joints and random object orientations."""
    from dexjax import scene
    from dexjax.vision import dataset

    model = scene.build_model()
    rng = np.random.default_rng(seed)
    qpos = np.tile(model.qpos0, (count, 1))
    hand = model.jnt_qposadr[[j for j in range(model.njnt) if model.jnt_type[j] == 3]]
    low, high = model.jnt_range[[j for j in range(model.njnt) if model.jnt_type[j] == 3]].T
    qpos[:, hand] = rng.uniform(low, high, (count, len(hand)))
    adr = dataset.object_qpos_address(model)
    quat = rng.normal(size=(count, 4))
    qpos[:, adr + 3 : adr + 7] = quat / np.linalg.norm(quat, axis=1, keepdims=True)
    return qpos.astype(np.float32)


def bench_mjx(size: int, batch: int, randomize: bool, calls: int) -> dict:
    import jax

    from dexjax import scene
    from dexjax.vision import render

    model = scene.build_model()
    config = render.VisionConfig(width=size, height=size, randomize=randomize)
    start = time.perf_counter()
    renderer = render.VisionRenderer(model, config, batch)
    qpos = _states(batch)
    key = jax.random.key(0)
    jax.block_until_ready(renderer.render(key, qpos))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(calls):
        jax.block_until_ready(renderer.render(jax.random.fold_in(key, i), qpos))
    seconds = time.perf_counter() - start
    images = calls * batch * len(CAMERAS)
    return {
        "renderer": "dexjax mjx.render (MuJoCo Warp, CPU)",
        "size": size,
        "batch": batch,
        "randomize": randomize,
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 1),
        "first_call_s": round(compile_s, 1),
    }


def bench_opengl(size: int, count: int) -> dict:
    """MuJoCo's OpenGL renderer on the same states (run in a process with MUJOCO_GL set)."""
    import mujoco

    from dexjax import scene
    from dexjax.vision import render

    model = render.build_render_model(scene.build_model())
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
    model.vis.global_.offheight = max(model.vis.global_.offheight, size)
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, size, size)
    qpos = _states(count)
    options = mujoco.MjvOption()
    options.geomgroup[:] = [1, 1, 1, 0, 0, 0]  # the groups the MJX renderer draws

    def draw(q):
        data.qpos[:] = q
        mujoco.mj_forward(model, data)
        out = []
        for camera in CAMERAS:
            renderer.update_scene(data, camera=camera, scene_option=options)
            out.append(renderer.render())
        return out

    first = draw(qpos[0])  # context creation and first upload
    start = time.perf_counter()
    for q in qpos:
        draw(q)
    seconds = time.perf_counter() - start
    images = count * len(CAMERAS)
    return {
        "renderer": f"mujoco.Renderer (OpenGL, MUJOCO_GL={os.environ.get('MUJOCO_GL')})",
        "size": size,
        "batch": 1,
        "randomize": False,
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 1),
        "not_blank": bool(np.std(first[0]) > 0),
    }


_GL_LIBRARIES = {"egl": "EGL", "osmesa": "OSMesa", "glfw": "glfw"}


def run_opengl_child(size: int, count: int, backend: str) -> dict:
    import ctypes.util

    library = _GL_LIBRARIES.get(backend, backend)
    if ctypes.util.find_library(library) is None:
        return {
            "renderer": f"mujoco.Renderer (MUJOCO_GL={backend})",
            "size": size,
            "error": f"cannot run here: lib{library} is not installed",
        }
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    command = [sys.executable, __file__, "--opengl-child", str(size), str(count)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"renderer": f"mujoco.Renderer (MUJOCO_GL={backend})", "error": "timed out"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"renderer": f"mujoco.Renderer (MUJOCO_GL={backend})", "size": size,
                "error": f"could not run: {tail}"}  # fmt: skip
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 200])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--opengl", nargs="*", default=["egl", "osmesa"])
    parser.add_argument("--opengl-states", type=int, default=60)
    parser.add_argument("--opengl-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.opengl_child:
        print(json.dumps(bench_opengl(*args.opengl_child)))
        return 0

    from dexjax import runtime

    runtime.configure_jax()
    rows = []
    for size in args.sizes:
        for backend in args.opengl:
            rows.append(run_opengl_child(size, args.opengl_states, backend))
            print(rows[-1], flush=True)
        for batch in args.batch:
            for randomize in (True, False):
                rows.append(bench_mjx(size, batch, randomize, args.calls))
                print(rows[-1], flush=True)
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_at_end": os.getloadavg(),
        },
        "note": "camera images per second (one image = one camera of one state)",
        "rows": rows,
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
