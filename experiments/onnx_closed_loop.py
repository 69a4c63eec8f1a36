"""The exported policy drives the simulated hand: consecutive successes of the reference
runner (onnxruntime) against the JAX policy on the same seed, evaluation protocol.

python experiments/onnx_closed_loop.py RUN_DIR [--trials 4] [--seed 12345] [--timeout 80]

Both policies act on observations from dexjax through the SAME compiled environment step
(one `jit(vmap(env.step))`, driven from the host one control step at a time), so any
difference in the outcome comes from the policies alone. The trials follow
`dexjax.evaluate` (same reset keys, same bookkeeping: a trial is the first episode, ending
on a drop, 50 successes or `--timeout` seconds without a success); `evaluate.evaluate`
itself (policy and simulation fused in one compiled loop) is run too, for reference.
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

from dexjax import runtime


def run_trials(env, reset_fn, step_fn, act, trials: int, seed: int) -> dict:
    """Trials of the evaluation protocol with `act(obs [n, D], start [n]) -> action [n, A]`
    choosing the actions on the host; per-trial results and every step's actions."""
    import jax

    from dexjax import evaluate

    key_reset, _ = jax.random.split(jax.random.key(seed))  # as evaluate.evaluate
    state = reset_fn(jax.random.split(key_reset, trials))
    start = np.ones(trials, bool)
    finished = np.zeros(trials, bool)
    successes = np.zeros(trials, int)
    dropped = np.zeros(trials, bool)
    steps = np.zeros(trials, int)
    actions = []
    limit = evaluate.MAX_SUCCESSES * env.config.steps_without_success + 1
    for _ in range(limit):
        action = np.asarray(act(np.asarray(state.obs["state"]), start), np.float32)
        actions.append(action)
        state = step_fn(state, action)
        m = jax.device_get(state.metrics)
        ends = (m["env/episode_done"] > 0) & ~finished
        successes = np.where(ends, m["env/successes"].astype(int), successes)
        dropped = np.where(ends, m["env/dropped"] > 0, dropped)
        steps += ~finished
        finished |= ends
        start = np.asarray(state.done) > 0
        if finished.all():
            break
    return {
        "successes": successes.tolist(),
        "dropped": dropped.tolist(),
        "steps": steps.tolist(),
        "actions": np.stack(actions),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--timeout", type=float, default=80.0)
    parser.add_argument("--checkpoint", type=int)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)

    runtime.configure_jax()
    import jax

    from dexjax import env as env_lib
    from dexjax import evaluate, export, networks, onnx_runner, train

    n = args.trials
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = export.export_policy(args.run_dir, tmp, step=args.checkpoint)
        config, _, learner = export.load_run(pathlib.Path(args.run_dir), result.checkpoint_update)
        env = env_lib.HandEnv(evaluate.eval_env_config(config.env, args.timeout))
        reset_fn, step_fn = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))

        runners = [onnx_runner.PolicyRunner(tmp) for _ in range(n)]

        def act_onnx(obs, start):
            for i in np.flatnonzero(start):
                runners[i].reset()
            return np.stack([r.step(o) for r, o in zip(runners, obs, strict=True)])

        onnx = run_trials(env, reset_fn, step_fn, act_onnx, n, args.seed)
    print(f"onnxruntime: {onnx['successes']} ({time.perf_counter() - began:.0f} s so far)")

    tc = config.train

    def policy_step(lr, carry, obs, start):
        return train.policy_step(tc, env.action_size, lr.params, lr.normalizers, carry, obs, start)

    policy = jax.jit(policy_step)
    carry = {"carry": networks.initial_carry(n, tc.network.policy_lstm)}

    def act_jax(obs, start):
        carry["carry"], action = policy(learner, carry["carry"], obs, start)
        return action

    jax_run = run_trials(env, reset_fn, step_fn, act_jax, n, args.seed)
    print(f"JAX:         {jax_run['successes']} ({time.perf_counter() - began:.0f} s so far)")

    official = evaluate.evaluate(
        config,
        learner,
        evaluate.EvalConfig(trials=n, seed=args.seed, timeout_s=args.timeout),
        progress=False,
    )
    same_length = onnx["actions"].shape == jax_run["actions"].shape
    identical = same_length and bool(np.array_equal(onnx["actions"], jax_run["actions"]))
    record = {
        "run_dir": args.run_dir,
        "checkpoint_update": result.checkpoint_update,
        "trials": n,
        "seed": args.seed,
        "timeout_s": args.timeout,
        "onnx_runner": {k: v for k, v in onnx.items() if k != "actions"},
        "jax_policy_step": {k: v for k, v in jax_run.items() if k != "actions"},
        "actions_identical_every_step": identical,
        "control_steps": int(onnx["actions"].shape[0]),
        "evaluate_evaluate": {
            "successes": official.successes.tolist(),
            "dropped": official.dropped.tolist(),
            "steps": official.steps.tolist(),
        },
        "seconds": time.perf_counter() - began,
    }
    print(json.dumps(record, indent=2))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    same = onnx["successes"] == jax_run["successes"] and identical
    print("SAME consecutive successes and actions" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
