"""Latency of one policy step of an exported policy in onnxruntime (batch 1), against the
paper's 80 ms control period, with the jitted JAX `train.policy_step` measured alongside.

python experiments/bench_export_latency.py RUN_DIR [--steps 10000] [--json FILE]

The run's checkpoint is exported to a temporary directory; each backend then steps the
policy `--steps` times on batch 1, feeding the LSTM state back, and every step is timed
on its own (wall clock, perf_counter_ns). onnxruntime runs on one intra-op thread;
`PolicyRunner` adds the reference runner's Python bookkeeping to the plain session call.
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

from dexjax import runtime

CONTROL_PERIOD_MS = 80.0  # the paper's control step (10 x 8 ms physics steps)


def _stats(ns: list[int]) -> dict:
    ms = np.asarray(ns, np.float64) / 1e6
    return {
        "steps": len(ms),
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(np.mean(ms)),
        "max_ms": float(np.max(ms)),
        "median_fraction_of_control_period": float(np.median(ms) / CONTROL_PERIOD_MS),
    }


def _timed(step, inputs: np.ndarray, steps: int, warmup: int = 100) -> list[int]:
    for i in range(warmup):
        step(inputs[i % len(inputs)])
    out = []
    for i in range(steps):
        began = time.perf_counter_ns()
        step(inputs[i % len(inputs)])
        out.append(time.perf_counter_ns() - began)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--checkpoint", type=int)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)

    runtime.configure_jax()
    import jax
    import onnxruntime

    from dexjax import export, networks, onnx_runner, train

    with tempfile.TemporaryDirectory() as tmp:
        result = export.export_policy(args.run_dir, tmp, step=args.checkpoint)
        config, env, learner = export.load_run(pathlib.Path(args.run_dir), result.checkpoint_update)
        lstm = config.train.network.policy_lstm
        stats = learner.normalizers.policy_obs
        mean, std = np.asarray(stats.mean), np.asarray(stats.std)
        rng = np.random.default_rng(0)
        obs = (mean + std * rng.normal(size=(256, 1, mean.shape[0]))).astype(np.float32)

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(result.policy_path), options, providers=["CPUExecutionProvider"]
        )
        state = {"h": np.zeros((1, lstm), np.float32), "c": np.zeros((1, lstm), np.float32)}

        def onnx_step(o):
            _, state["h"], state["c"], _, _ = session.run(None, {"obs": o, **state})

        runner = onnx_runner.PolicyRunner(tmp)
        rows = {
            "onnxruntime_session": _stats(_timed(onnx_step, obs, args.steps)),
            "onnx_runner.PolicyRunner": _stats(_timed(runner.step, obs[:, 0], args.steps)),
        }

    policy = jax.jit(
        lambda learner, carry, o: train.policy_step(
            config.train,
            env.action_size,
            learner.params,
            learner.normalizers,
            carry,
            o,
            jax.numpy.zeros(1, bool),
        )
    )
    carry = {"carry": networks.initial_carry(1, lstm)}
    obs_jax = [jax.device_put(o) for o in obs]

    def jax_step(o):
        carry["carry"], action = policy(learner, carry["carry"], o)
        action.block_until_ready()

    rows["jax_jit_policy_step"] = _stats(_timed(jax_step, obs_jax, args.steps))

    print(
        f"one policy step, batch 1, {args.steps} steps, update {result.checkpoint_update} of "
        f"{args.run_dir} (hidden {config.train.network.hidden}, LSTM {lstm}):"
    )
    print(f"{'backend':28s} {'median ms':>10s} {'p99 ms':>10s} {'of 80 ms':>9s}")
    for name, row in rows.items():
        share = 100 * row["median_fraction_of_control_period"]
        print(f"{name:28s} {row['median_ms']:10.3f} {row['p99_ms']:10.3f} {share:8.2f}%")
    if args.json:
        record = {
            "run_dir": args.run_dir,
            "checkpoint_update": result.checkpoint_update,
            "control_period_ms": CONTROL_PERIOD_MS,
            "versions": export.versions(),
            "rows": rows,
        }
        pathlib.Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
