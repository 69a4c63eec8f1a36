"""The `dexjax` command.

dexjax train [--preset NAME] [--run-dir DIR] [--set group.field=value ...] [--resume DIR]
             [--coordinator-address HOST:PORT --num-processes N --process-id I | --distributed]
dexjax eval RUN_DIR [--trials N] [--json FILE] [--policy trained|random] [--video GIF]
dexjax plot RUN_DIR [--baseline EVAL_JSON] [--out PNG]
dexjax bench [--json FILE] [--batch 16 128] [--no-peers]
dexjax bench --train [--batch 32 128] [--preset cpu] [--json FILE] [--no-peers]
dexjax export RUN_DIR --out DIR [--checkpoint N] [--opset N] [--vision-run POSE_RUN]
dexjax vision dataset --num-images N --out DIR [--size 64] [--run-dir RUN] [--seed S]
dexjax vision export POSE_RUN --out DIR [--checkpoint N] [--opset N]
dexjax vision train --data DIR [--test-data DIR] --out DIR [--preset cpu|paper] [--set F=V]
dexjax vision eval POSE_RUN --data DIR [--json FILE]
"""

import argparse
import json
import pathlib
import sys
import time

from dexjax import runtime


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dexjax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a policy with LSTM PPO")
    train.add_argument(
        "--preset",
        help="smoke, cpu, gpu or paper (default: cpu without an accelerator, else gpu)",
    )
    train.add_argument("--run-dir", help="where the run is written (default: runs/<preset>-<time>)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="GROUP.FIELD=VALUE",
        help="override a config field, e.g. --set train.num_envs=64 (repeatable)",
    )
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its checkpoint")
    train.add_argument(
        "--init-from",
        metavar="DIR",
        help="start from the trained networks of this run (or saved policy) with a fresh "
        "optimizer: a curriculum stage; the networks and observations must match",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--show-config", action="store_true", help="print the config and exit")
    dist = train.add_argument_group(
        "several processes (jax.distributed; every process runs the same command)"
    )
    dist.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's address")
    dist.add_argument("--num-processes", type=int, help="processes in the run")
    dist.add_argument("--process-id", type=int, help="this process's index (0: writes the run)")
    dist.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run described by the scheduler's environment variables "
        "(SLURM, Open MPI, JAX_COORDINATOR_ADDRESS, ...) as jax.distributed detects them",
    )
    dist.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=30,
        metavar="S",
        help="seconds after which a silent process counts as dead and the run fails",
    )

    ev = sub.add_parser("eval", help="consecutive successes of a trained run (paper protocol)")
    ev.add_argument("run_dir", help="a run directory written by dexjax train")
    ev.add_argument("--trials", type=int, default=100)
    ev.add_argument("--seed", type=int, default=12345)
    ev.add_argument("--checkpoint", type=int, help="update of the checkpoint (default: latest)")
    ev.add_argument(
        "--policy",
        choices=("trained", "random"),
        default="trained",
        help="'random' scores uniformly random actions on the same task (a baseline)",
    )
    ev.add_argument("--sample", action="store_true", help="sample actions, not the most likely")
    ev.add_argument(
        "--timeout",
        type=float,
        default=80.0,
        help="seconds without a success that end a trial (the paper's 80)",
    )
    ev.add_argument("--json", metavar="FILE", help="write the summary as JSON")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument(
        "--video",
        metavar="FILE",
        help="also write a GIF of one trial (that of --trials 1 with this seed), all cameras; "
        "with --pose-source vision, the images the pose network saw below, and its errors",
    )
    ev.add_argument(
        "--video-steps", type=int, default=300, help="control steps in the video at most"
    )
    ev.add_argument("--video-size", type=int, default=160, help="pixels of each camera image")
    ev.add_argument("--video-only", action="store_true", help="write the video, skip the trials")
    ev.add_argument(
        "--pose-source",
        choices=("state", "vision"),
        default="state",
        help="the object pose the policy sees: the simulator's, or the CNN's from renders",
    )
    ev.add_argument(
        "--vision-run", metavar="POSE_RUN", help="pose estimator for --pose-source vision"
    )

    plot = sub.add_parser("plot", help="draw a run's learning curves")
    plot.add_argument("run_dir")
    plot.add_argument("--out", help="PNG to write (default: RUN_DIR/curves.png)")
    plot.add_argument(
        "--baseline",
        metavar="EVAL_JSON",
        help="a `dexjax eval --json` file (e.g. of --policy random) drawn as dashed lines",
    )

    bench = sub.add_parser("bench", help="measure simulation throughput against peers")
    bench.add_argument(
        "--batch", type=int, nargs="+", help="batch sizes (default 16 128; --train: 32 128)"
    )
    bench.add_argument("--calls", type=int, help="timed calls (default 5; --train: 3)")
    bench.add_argument(
        "--train",
        action="store_true",
        help="training throughput (simulation + LSTM PPO update) against Brax PPO training "
        "MuJoCo Playground's LEAP cube task, at the same env counts",
    )
    bench.add_argument("--preset", default="cpu", help="--train: the dexjax preset timed")
    bench.add_argument(
        "--backend",
        nargs="+",
        default=["c", "mjx"],
        choices=("c", "mjx"),
        help="dexjax physics backends to measure (the ratios are to the C backend's rows)",
    )
    bench.add_argument(
        "--no-peers", action="store_true", help="skip MuJoCo Playground (and --train: SB3)"
    )
    bench.add_argument(
        "--peer-impl",
        nargs="+",
        default=["jax"],
        choices=("jax", "warp"),
        help="MJX implementations of the Playground peer to measure",
    )
    bench.add_argument("--json", metavar="FILE", help="write the rows as a JSON list")

    export = sub.add_parser("export", help="write a trained policy as ONNX with its spec")
    export.add_argument("run_dir", help="a run directory written by dexjax train")
    export.add_argument("--out", required=True, help="directory for policy.onnx and its spec")
    export.add_argument("--checkpoint", type=int, help="update of the checkpoint (default: latest)")
    export.add_argument("--opset", type=int, help="ONNX opset, 13 to 26 (default: 17)")
    export.add_argument(
        "--vision-run",
        metavar="POSE_RUN",
        help="also write pose_estimator.onnx and its spec from this `dexjax vision train` run",
    )

    keep = sub.add_parser(
        "save-policy",
        help="copy a run's policy (parameters and normalizers, no optimizer state), config "
        "and learning curves to a small directory that eval, export, plot and the notebooks "
        "take as a run",
    )
    keep.add_argument("run_dir", help="a run directory written by dexjax train")
    keep.add_argument(
        "out", help="directory to write config.json, policy.msgpack, metrics.csv and curves.png to"
    )
    keep.add_argument("--checkpoint", type=int, help="update of the checkpoint (default: latest)")

    # `dexjax vision <command>`: each subcommand sets `run`, the function that runs it.
    vision = sub.add_parser("vision", help="camera images, datasets and the pose estimator")
    vision_sub = vision.add_subparsers(dest="vision_command", required=True)
    dataset = vision_sub.add_parser("dataset", help="render a dataset of labelled camera images")
    dataset.set_defaults(run=_vision_dataset)
    dataset.add_argument("--num-images", type=int, required=True, help="states to render")
    dataset.add_argument("--out", required=True, help="new directory for shards and manifest")
    dataset.add_argument("--size", type=int, default=64, help="image width and height (pixels)")
    dataset.add_argument("--run-dir", help="act with this run's policy (default: random actions)")
    dataset.add_argument("--seed", type=int, default=0)
    dataset.add_argument("--num-envs", type=int, default=64, help="environments (= render batch)")
    dataset.add_argument("--steps-between", type=int, default=4, help="control steps per state")
    dataset.add_argument("--no-randomize", action="store_true", help="nominal look, no noise")
    dataset.add_argument("--no-progress", action="store_true", help="no progress bar")

    vtrain = vision_sub.add_parser("train", help="train the pose estimator on a rendered dataset")
    vtrain.set_defaults(run=_vision_train)
    vtrain.add_argument("--data", required=True, help="training set (dexjax vision dataset)")
    vtrain.add_argument("--test-data", help="held-out set, evaluated during training")
    vtrain.add_argument("--out", required=True, help="new directory for the run")
    vtrain.add_argument("--preset", default="cpu", choices=("cpu", "paper"), help="network")
    vtrain.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field, e.g. --set steps=5000 or --set net.hidden=64",
    )
    vtrain.add_argument("--no-progress", action="store_true", help="no progress bar")
    veval = vision_sub.add_parser("eval", help="pose errors on held-out renders (Table 6)")
    veval.set_defaults(run=_vision_eval)
    veval.add_argument("pose_run", help="a run directory written by dexjax vision train")
    veval.add_argument("--data", required=True, help="held-out set of the run's resolution")
    veval.add_argument("--checkpoint", type=int, help="minibatch of the checkpoint (latest)")
    veval.add_argument("--json", metavar="FILE", help="write the errors as JSON")
    vexport = vision_sub.add_parser("export", help="write a pose estimator as ONNX with its spec")
    vexport.set_defaults(run=_vision_export)
    vexport.add_argument("pose_run", help="a run directory written by dexjax vision train")
    vexport.add_argument("--out", required=True, help="directory for pose_estimator.onnx")
    vexport.add_argument("--checkpoint", type=int, help="step of the checkpoint (default: latest)")
    vexport.add_argument("--opset", type=int, help="ONNX opset, 13 to 26 (default: 17)")
    return parser


def _initialize_distributed(args: argparse.Namespace) -> None:
    """Join a multi-process run when asked to (before JAX's first computation)."""
    given = [args.coordinator_address, args.num_processes, args.process_id]
    if not args.distributed and all(v is None for v in given):
        return
    if not args.distributed and any(v is None for v in given):
        raise ValueError(
            "--coordinator-address, --num-processes and --process-id go together "
            "(or use --distributed to read them from the scheduler's environment)"
        )
    from dexjax import parallel

    parallel.initialize(
        parallel.DistributedConfig(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
            heartbeat_timeout_s=args.heartbeat_timeout,
        )
    )


def _print_devices(config) -> None:
    """The devices training runs on and the physics engine stepping the hand."""
    import jax

    from dexjax import physics

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    backend = physics.resolve(config.env.backend)
    threads = config.env.physics_threads or physics.default_threads()
    engine = f"MuJoCo's C engine ({threads} thread{'s' if threads > 1 else ''})"
    engine = engine if backend == "c" else "MJX"
    print(
        f"devices: {len(devices)} x {', '.join(kinds)} ({jax.default_backend()}) in "
        f"{jax.process_count()} process(es); physics: {engine}"
    )


def _train(args: argparse.Namespace) -> int:
    from dexjax import config as config_lib
    from dexjax import run

    _initialize_distributed(args)

    try:
        if args.resume:
            if args.preset or args.overrides or args.run_dir or args.init_from:
                raise SystemExit(
                    "--resume takes the run's own config and networks: "
                    "drop --preset/--set/--run-dir/--init-from"
                )
            _print_devices(run.read_config(pathlib.Path(args.resume)))
            result = run.train(args.resume, resume=True, progress=not args.no_progress)
        else:
            preset = args.preset or config_lib.default_preset()
            config = config_lib.override(config_lib.preset(preset), args.overrides)
            if args.show_config:
                print(config_lib.to_json(config))
                return 0
            run_dir = args.run_dir or f"runs/{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
            print(f"training preset {preset!r} into {run_dir}; the first chunk compiles")
            _print_devices(config)
            if args.init_from:
                print(f"starting from the networks of {args.init_from}")
            result = run.train(
                run_dir,
                config,
                preset=preset,
                init_from=args.init_from,
                progress=not args.no_progress,
            )
    except run.Interrupted as stop:
        print(stop, file=sys.stderr)
        return 128 + stop.signum
    except run.DivergedError as err:
        print(f"training diverged: {err}", file=sys.stderr)
        return 1
    print(
        f"{result.update} updates, {result.env_steps:,} env steps in {result.seconds / 60:.1f} "
        f"min; metrics in {result.run_dir}/metrics.jsonl, curves in {result.run_dir}/curves.png"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    import pathlib

    from dexjax import evaluate, run

    if args.video_only and not args.video:
        raise ValueError("--video-only needs --video FILE")
    run_dir = pathlib.Path(args.run_dir)
    config = run.read_config(run_dir)
    env = run.make_env(config)
    vision, _renderer = _vision_pose_source(args, env)  # keep the renderer alive
    learner = None
    if args.policy == "trained":
        learner = evaluate.load_learner(run_dir, config, env, step=args.checkpoint)
    eval_config = evaluate.EvalConfig(
        trials=args.trials,
        seed=args.seed,
        policy=args.policy,
        sample=args.sample,
        timeout_s=args.timeout,
    )
    if args.video:
        _write_video(args, config, env, learner, eval_config)
    if args.video_only:
        return 0
    result = evaluate.evaluate(
        config, learner, eval_config, progress=not args.no_progress, vision=vision
    )
    summary = result.summary()
    label = f"{run_dir} ({args.policy} policy, update {summary['checkpoint_update']})"
    if vision is not None:
        label += f", object pose from {args.vision_run}"
    print(evaluate.format_summary(summary, label))
    if args.json:
        with open(args.json, "w") as f:
            record = {"run_dir": str(run_dir), "policy": args.policy, "timeout_s": args.timeout}
            record.update(pose_source=args.pose_source, vision_run=args.vision_run)
            json.dump({**record, **summary}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def _vision_pose_source(args: argparse.Namespace, env):
    """(VisionPose, its renderer) for --pose-source vision, else (None, None)."""
    if args.pose_source != "vision":
        if args.vision_run:
            raise ValueError("--vision-run needs --pose-source vision")
        return None, None
    if not args.vision_run:
        raise ValueError("--pose-source vision needs --vision-run POSE_RUN (dexjax vision train)")
    from dexjax.vision import evaluate_pose

    if args.video_only:  # the video loads its own (one world); no trials to render for
        evaluate_pose.train_pose.read_config(args.vision_run)  # a clear error if not a pose run
        return None, None
    return evaluate_pose.load_vision_pose(args.vision_run, env.mj_model, args.trials)


def _write_video(args, config, env, learner, eval_config) -> None:
    from dexjax import evaluate, render

    if args.video_steps < 1 or args.video_size < 1:
        raise ValueError("--video-steps and --video-size must be positive")
    print(f"recording {args.video_steps} steps at most of one trial for {args.video}")
    start = time.time()
    vision, _renderer = None, None  # the renderer owns the vision context's buffers
    if args.pose_source == "vision":
        from dexjax.vision import evaluate_pose

        vision, _renderer = evaluate_pose.load_vision_pose(args.vision_run, env.mj_model, 1)
    rec = evaluate.record_trial(config, learner, eval_config, steps=args.video_steps, vision=vision)
    frames, captions = video_frames(rec, env, args.video_size)
    path = render.write_gif(frames, args.video, 1.0 / env.config.control_dt, captions)
    end = "trial ended" if rec.ended else "trial goes on"
    print(
        f"wrote {path}: {len(frames)} frames ({end}, {rec.reached} successes) "
        f"in {time.time() - start:.0f} s"
    )


def video_frames(rec, env, size: int):
    """Frames uint8 [T, H, W, 3] and captions of a `evaluate.TrialRecording`: the scene from
    the three cameras (`size` pixels each) and, for a vision trial, below it the randomized
    images the pose network saw, the captions saying how far its estimate was off."""
    import numpy as np

    from dexjax import render

    renderer = render.Renderer(env.mj_model, width=size, height=size)
    frames = render.tile(renderer.render(rec.qpos, rec.mocap_quat))
    dt = env.config.control_dt
    captions = [f"t={i * dt:.1f} s, {int(k)} successes" for i, k in enumerate(rec.successes)]
    if rec.camera_images is None:
        return frames, captions
    seen = render.tile(_resize(rec.camera_images, size))
    errors = zip(rec.position_error_mm, rec.rotation_error_deg, strict=True)
    captions = [
        f"{c}; estimate off {mm:.0f} mm, {deg:.0f} deg" if np.isfinite(mm) else c
        for c, (mm, deg) in zip(captions, errors, strict=True)
    ]
    return np.concatenate([frames, seen], axis=1), captions


def _resize(images, size: int):
    """Camera images [T, cameras, h, w, 3] scaled to size x size (nearest pixel)."""
    import numpy as np

    _, _, h, w, _ = images.shape
    rows = np.arange(size) * h // size
    cols = np.arange(size) * w // size
    return images[:, :, rows][:, :, :, cols]


def _plot(args: argparse.Namespace) -> int:
    import pathlib

    from dexjax import logs, run

    run_dir = pathlib.Path(args.run_dir)
    run.read_config(run_dir)  # a clear error when this is not a run
    rows = logs.read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir} has no metrics yet")
    baseline, label = None, "baseline"
    if args.baseline:
        with open(args.baseline) as f:
            summary = json.load(f)
        baseline = logs.baseline_from_eval(summary)
        label = f"{summary.get('policy', 'baseline')} policy (eval)"
    out = pathlib.Path(args.out) if args.out else run_dir / logs.CURVES_FILE
    logs.plot_curves(rows, out, title=str(run_dir), baseline=baseline, baseline_label=label)
    print(f"wrote {out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from dexjax import bench

    if args.train:
        return _bench_train(args)
    cfg = bench.BenchConfig(
        batches=tuple(args.batch or (16, 128)),
        calls=args.calls or 5,
        peers=not args.no_peers,
        peer_impls=tuple(args.peer_impl),
        backends=tuple(args.backend),
    )
    with runtime.Watchdog(timeout_s=1800):
        rows = bench.run(cfg)
    print(bench.table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def _bench_train(args: argparse.Namespace) -> int:
    from dexjax import bench

    cfg = bench.TrainBenchConfig(
        env_counts=tuple(args.batch or (32, 128)),
        preset=args.preset,
        calls=args.calls or 3,
        peers=not args.no_peers,
        sb3=not args.no_peers,
        backends=tuple(args.backend),
    )
    done: list[dict] = []
    watchdog = runtime.Watchdog(timeout_s=3600)  # an hour without a finished row: stuck

    def progress(line: str, row: dict | None = None) -> None:
        watchdog.beat()
        print(line, flush=True)
        if row is not None and args.json:  # rows so far, in case a later one fails
            done.append(row)
            with open(args.json, "w") as f:
                json.dump(done, f, indent=2, default=str)

    with watchdog:
        rows = bench.run_train(cfg, progress)
    print(bench.train_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dexjax import export

    opset = export.DEFAULT_OPSET if args.opset is None else args.opset
    if args.vision_run:  # fail on a bad pose run before the slower policy export
        from dexjax.vision import train_pose

        train_pose.read_config(args.vision_run)
    result = export.export_policy(args.run_dir, args.out, step=args.checkpoint, opset=opset)
    print(
        f"exported update {result.checkpoint_update} of {args.run_dir} (opset {result.opset}): "
        f"{result.policy_path}, {result.spec_path}; onnxruntime matches JAX within "
        f"{result.max_abs_diff:.1e}"
    )
    if args.vision_run:
        _export_pose(args.vision_run, args.out, None, opset)
    return 0


def _save_policy(args: argparse.Namespace) -> int:
    import pathlib
    import shutil

    from dexjax import checkpoint, evaluate, logs, run

    run_dir, out = pathlib.Path(args.run_dir), pathlib.Path(args.out)
    config = run.read_config(run_dir)
    if (out / checkpoint.POLICY_FILE).exists() or run.holds_run(out):
        raise ValueError(f"{out} already holds a run or a policy; choose another directory")
    learner = evaluate.load_learner(run_dir, config, run.make_env(config), step=args.checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / run.CONFIG_FILE, out / run.CONFIG_FILE)
    checkpoint.save_policy(out / checkpoint.POLICY_FILE, learner)
    size = (out / checkpoint.POLICY_FILE).stat().st_size
    carried = "its config"
    rows = logs.read_metrics(run_dir, max_update=int(learner.update))
    if rows:  # the learning curve up to the saved update
        logs.write_metrics_csv(rows, out / logs.METRICS_CSV_FILE)
        logs.plot_curves(rows, out / logs.CURVES_FILE, title=str(out))
        carried += f", {logs.METRICS_CSV_FILE} and {logs.CURVES_FILE}"
    print(
        f"saved the policy of update {int(learner.update)} of {run_dir} to "
        f"{out / checkpoint.POLICY_FILE} ({size / 1e6:.1f} MB) with {carried}"
    )
    return 0


def _export_pose(pose_run: str, out: str, step: int | None, opset: int) -> None:
    from dexjax.vision import export_pose

    result = export_pose.export_pose_estimator(pose_run, out, step=step, opset=opset)
    print(
        f"exported step {result.checkpoint_step} of {pose_run} (opset {result.opset}): "
        f"{result.model_path}, {result.spec_path}; onnxruntime matches JAX within "
        f"{result.max_abs_diff:.1e}"
    )


def _vision_export(args: argparse.Namespace) -> int:
    from dexjax import export

    opset = export.DEFAULT_OPSET if args.opset is None else args.opset
    _export_pose(args.pose_run, args.out, args.checkpoint, opset)
    return 0


def _vision_dataset(args: argparse.Namespace) -> int:
    from dexjax.vision import dataset, render

    config = dataset.DatasetConfig(
        num_images=args.num_images,
        vision=render.VisionConfig(
            width=args.size, height=args.size, randomize=not args.no_randomize
        ),
        num_envs=args.num_envs,
        steps_between=args.steps_between,
        seed=args.seed,
    )
    start = time.time()
    manifest = dataset.build_dataset(args.out, config, args.run_dir, not args.no_progress)
    print(
        f"wrote {manifest['count']} states x {len(manifest['cameras'])} cameras in "
        f"{len(manifest['shards'])} shards to {args.out} ({time.time() - start:.0f} s)"
    )
    return 0


def _vision_train(args: argparse.Namespace) -> int:
    from dexjax import config as config_lib
    from dexjax.vision import train_pose

    config = config_lib.override(train_pose.default_config(args.preset), args.overrides)
    print(f"training the {args.preset!r} pose network on {args.data} into {args.out}")
    result = train_pose.train(
        args.data, args.out, config, args.test_data, progress=not args.no_progress
    )
    print(
        f"{result.steps} minibatches in {result.seconds / 60:.1f} min; metrics in "
        f"{result.run_dir}/metrics.jsonl, curves in {result.run_dir}/curves.png"
    )
    if result.last_eval:
        print("held-out:", ", ".join(f"{k} {v:.2f}" for k, v in result.last_eval.items()))
    return 0


def _vision_eval(args: argparse.Namespace) -> int:
    from dexjax.vision import evaluate_pose

    result = evaluate_pose.evaluate_run(args.pose_run, args.data, args.checkpoint)
    label = f"{args.pose_run} @ {result['checkpoint']}"
    print(evaluate_pose.format_table(result, label[-28:]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def _vision(args: argparse.Namespace) -> int:
    return args.run(args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    runtime.configure_jax()
    from dexjax.checkpoint import CheckpointError

    commands = {"train": _train, "eval": _eval, "plot": _plot, "bench": _bench, "export": _export}
    commands["vision"] = _vision
    commands["save-policy"] = _save_policy
    try:
        return commands[args.command](args)
    except (ValueError, CheckpointError) as error:
        print(f"dexjax {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
