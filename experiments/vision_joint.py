"""Item 6 of issue 6: the pose network trained inside the PPO chunk, against the dataset path.

python experiments/vision_joint.py RUN_DIR --test-data DIR --train-data DIR
    [--updates 40] [--chunk 5] [--images 32] [--json FILE]

1. Cost: seconds per PPO update of `train.train_chunk` and of
   `vision.joint.train_chunk_with_pose` (same config, same starting runner: RUN_DIR's
   trained policy on fresh environments), measured after compilation, in one process.
2. Pose error at equal images seen: the joint pose network after `--updates` updates
   (`--images` renders each) on the held-out set, and a network of the same preset trained
   from the dataset with as many image triples seen (`--images` x `--updates`, minibatches
   of 64), on the same held-out set.
"""

import argparse
import dataclasses
import json
import pathlib
import tempfile
import time

from dexjax import runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--test-data", required=True)
    parser.add_argument("--train-data", required=True)
    parser.add_argument("--updates", type=int, default=40, help="joint updates (pose error)")
    parser.add_argument("--chunk", type=int, default=5, help="updates per compiled chunk")
    parser.add_argument("--images", type=int, default=32, help="renders per update")
    parser.add_argument("--timed-chunks", type=int, default=2, help="chunks timed per variant")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    runtime.configure_jax()

    import jax

    from dexjax import checkpoint, evaluate, run, train
    from dexjax.vision import dataset, evaluate_pose, joint, render, train_pose

    config = run.read_config(args.run_dir)
    env = run.make_env(config)
    tc = dataclasses.replace(config.train, updates_per_chunk=args.chunk)
    learner = evaluate.load_learner(pathlib.Path(args.run_dir), config, env)

    def fresh_runner():
        runner = train.init(tc, env, jax.random.key(1))
        return checkpoint.with_learner_state(runner, learner)

    def timed(call, state, chunks):
        """Seconds per update over `chunks` calls after one compiling call."""
        t = time.time()
        state = jax.block_until_ready(call(state))
        compile_s = time.time() - t
        t = time.time()
        for _ in range(chunks):
            state = jax.block_until_ready(call(state))
        return state, compile_s, (time.time() - t) / (chunks * args.chunk)

    print("timing train_chunk (compiles first)", flush=True)
    _, compile_plain, per_update_plain = timed(
        lambda r: train.train_chunk(tc, env, r)[0], fresh_runner(), args.timed_chunks
    )
    print(f"  {per_update_plain:.2f} s/update (compile {compile_plain:.0f} s)", flush=True)

    vision = render.VisionConfig.cpu()
    jc = joint.JointConfig(images_per_update=args.images)
    renderer = render.VisionRenderer(env.mj_model, vision, args.images)
    pose = joint.init(jc, vision, jax.random.key(2))
    rows = []

    def joint_call(carry):
        runner, pose = carry
        runner, pose, metrics = joint.train_chunk_with_pose(
            tc, env, jc, vision, runner, pose, renderer.scene, renderer.context
        )
        rows.extend(
            {k: float(v[i]) for k, v in jax.device_get(metrics).items() if "vision_" in k}
            for i in range(args.chunk)
        )
        return runner, pose

    print("timing train_chunk_with_pose (compiles first)", flush=True)
    carry, compile_joint, per_update_joint = timed(
        joint_call, (fresh_runner(), pose), args.timed_chunks
    )
    print(f"  {per_update_joint:.2f} s/update (compile {compile_joint:.0f} s)", flush=True)
    remaining = max(0, args.updates - (1 + args.timed_chunks) * args.chunk)
    for _ in range(-(-remaining // args.chunk)):
        carry = joint_call(carry)
    pose = carry[1]
    images_seen = int(pose.images_seen)
    test = dataset.open_dataset(args.test_data)
    joint_errors = evaluate_pose.errors_on(jc.pose, pose.learner.params, test)
    print(f"joint: {images_seen} images seen -> {joint_errors}", flush=True)

    steps = max(1, images_seen // 64)
    ds_config = dataclasses.replace(
        train_pose.default_config("cpu"), steps=steps, log_every=max(1, steps // 10)
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train_pose.train(args.train_data, pathlib.Path(tmp) / "run", ds_config)
        _, params, _ = train_pose.load_params(result.run_dir)
        ds_net = train_pose.read_config(result.run_dir)
        dataset_errors = evaluate_pose.errors_on(ds_net, params, test)
    print(f"dataset: {steps * 64} images seen -> {dataset_errors}", flush=True)

    out = {
        "run_dir": args.run_dir,
        "num_envs": tc.num_envs,
        "rollout_length": tc.rollout_length,
        "images_per_update": args.images,
        "pose_steps_per_update": jc.pose_steps,
        "resolution": [vision.height, vision.width],
        "seconds_per_update_without_pose": per_update_plain,
        "seconds_per_update_with_pose": per_update_joint,
        "cost_ratio": per_update_joint / per_update_plain,
        "compile_s_without": compile_plain,
        "compile_s_with": compile_joint,
        "joint": {"images_seen": images_seen, **joint_errors},
        "dataset": {"images_seen": steps * 64, **dataset_errors},
        "joint_online_errors": rows,
    }
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
