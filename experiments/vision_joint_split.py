"""Where the joint chunk's time goes: its parts timed separately, in one process.

python experiments/vision_joint_split.py RUN_DIR [--images 32] [--chunk 10] [--repeats 5]
    [--chunks 1] [--json FILE]

With RUN_DIR's config (its `num_envs`, rollout length) and trained policy, as
`experiments/vision_joint.py` uses them, each part is compiled by a first call and then
timed over further calls (`jax.block_until_ready` after each):

  render        `vision.render.render_images` alone, jitted, on `--images` states
  augment+render  the pose augmentation and the render, as `joint.pose_update` does them
  pose step     one `train_pose.train_step` (Adam) on `--images` image triples
  pose_update   `joint.pose_update` whole (augment, render, `pose_steps` steps)
  ppo update    `train.train_chunk` per update (`--chunk` updates per call)
  joint update  `joint.train_chunk_with_pose` per update (same config and runner)

The states are the final states of the first `--images` environments after one PPO chunk.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import time

from dexjax import runtime


def timed(call, args, repeats):
    """(first call s, [s per later call]) of `call(*args)`; each blocked until ready."""
    import jax

    t = time.time()
    jax.block_until_ready(call(*args))
    first = time.time() - t
    seconds = []
    for _ in range(repeats):
        t = time.time()
        jax.block_until_ready(call(*args))
        seconds.append(time.time() - t)
    return first, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--images", type=int, default=32, help="states rendered per update")
    parser.add_argument("--chunk", type=int, default=10, help="updates per compiled chunk")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each small part")
    parser.add_argument("--chunks", type=int, default=1, help="timed calls of each chunk")
    parser.add_argument("--skip-chunks", action="store_true", help="time the small parts only")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    runtime.configure_jax()

    import jax

    from dexjax import checkpoint, evaluate, run, train
    from dexjax.vision import joint, render, train_pose

    config = run.read_config(args.run_dir)
    env = run.make_env(config)
    tc = dataclasses.replace(config.train, updates_per_chunk=args.chunk)
    learner = evaluate.load_learner(pathlib.Path(args.run_dir), config, env)
    runner = checkpoint.with_learner_state(train.init(tc, env, jax.random.key(1)), learner)
    vision = render.VisionConfig.cpu()
    jc = joint.JointConfig(images_per_update=args.images)
    renderer = render.VisionRenderer(env.mj_model, vision, args.images)
    scene, context = renderer.scene, renderer.context
    pose = joint.init(jc, vision, jax.random.key(2))
    rows = {}

    def record(name, first, seconds, per):
        mean = statistics.mean(seconds) / per
        rows[name] = {
            "first_call_s": first,
            "calls": len(seconds),
            "per": per,
            "seconds_mean": mean,
            "seconds_min": min(seconds) / per,
        }
        print(f"  {name:16s} {mean:8.3f} s (min {min(seconds) / per:.3f}, first {first:.0f} s)")

    # train_chunk donates its runner: each call is fed the previous call's output.
    carry = {"runner": runner}

    def ppo_chunk():
        carry["runner"] = train.train_chunk(tc, env, carry["runner"])[0]
        return carry["runner"]

    print("ppo chunk (compiles first)", flush=True)
    first, seconds = timed(ppo_chunk, (), 0 if args.skip_chunks else args.chunks)
    if seconds:
        record("ppo update", first, seconds, args.chunk)
    states = carry["runner"].env_state.data
    qpos, mocap = states.qpos[: args.images], states.mocap_quat[: args.images]
    key_aug, key_render = jax.random.split(jax.random.key(3))

    render_alone = jax.jit(
        lambda key_render, qpos, mocap: render.render_images(
            scene, context, vision, key_render, qpos, mocap
        )
    )
    print("render alone", flush=True)
    record("render", *timed(render_alone, (key_render, qpos, mocap), args.repeats), 1)

    augment_render = jax.jit(
        lambda key_aug, qpos, mocap: joint.augmented_images(
            jc, vision, env, scene, context, key_aug, key_render, qpos, mocap
        )
    )
    print("augment + render", flush=True)
    record("augment+render", *timed(augment_render, (key_aug, qpos, mocap), args.repeats), 1)

    images, pos, q = augment_render(key_aug, qpos, mocap)
    step = jax.jit(
        lambda learner, images, pos, q: train_pose.train_step(jc.pose, learner, images, pos, q)
    )
    print("pose step", flush=True)
    record("pose step", *timed(step, (pose.learner, images, pos, q), args.repeats), 1)

    update = jax.jit(
        lambda pose, qpos, mocap: joint.pose_update(
            jc, vision, env, pose, scene, context, qpos, mocap
        )
    )
    print("pose_update", flush=True)
    record("pose_update", *timed(update, (pose, qpos, mocap), args.repeats), 1)

    if not args.skip_chunks:
        carry["pose"] = pose  # donated too, like the runner

        def joint_chunk():
            carry["runner"], carry["pose"], _ = joint.train_chunk_with_pose(
                tc, env, jc, vision, carry["runner"], carry["pose"], scene, context
            )
            return carry["pose"]

        print("joint chunk (compiles first)", flush=True)
        record("joint update", *timed(joint_chunk, (), args.chunks), args.chunk)

    out = {
        "command": "python experiments/vision_joint_split.py "
        + " ".join(a for a in os.sys.argv[1:]),
        "run_dir": args.run_dir,
        "num_envs": tc.num_envs,
        "rollout_length": tc.rollout_length,
        "updates_per_chunk": args.chunk,
        "images_per_update": args.images,
        "cameras": len(scene.camera_ids),
        "resolution": [vision.height, vision.width],
        "load_average_at_end": list(os.getloadavg()),
        "note": "seconds per call of each part (per PPO update for the two chunks)",
        "parts": rows,
    }
    print(json.dumps(out["parts"], indent=1))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
