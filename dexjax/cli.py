"""The `dexjax` command.

dexjax train [--steps N] [--envs B]   (until the PPO loop lands: a simulated rollout)
dexjax bench [--json FILE] [--batch 16 128] [--no-peers]
"""

import argparse
import json
import sys
import time

from dexjax import runtime


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dexjax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train a policy (for now: run a short simulated rollout and report it)",
    )
    train.add_argument("--envs", type=int, default=16, help="parallel environments")
    train.add_argument("--steps", type=int, default=50, help="control steps (80 ms each)")
    train.add_argument("--object", default="block", choices=("block", "octagon"))
    train.add_argument("--seed", type=int, default=0)

    bench = sub.add_parser("bench", help="measure simulation throughput against peers")
    bench.add_argument("--batch", type=int, nargs="+", default=[16, 128])
    bench.add_argument("--calls", type=int, default=5)
    bench.add_argument("--no-peers", action="store_true", help="skip MuJoCo Playground")
    bench.add_argument(
        "--peer-impl",
        nargs="+",
        default=["jax"],
        choices=("jax", "warp"),
        help="MJX implementations of the Playground peer to measure",
    )
    bench.add_argument("--json", metavar="FILE", help="write the rows as a JSON list")
    return parser


def _rollout(args: argparse.Namespace) -> int:
    """A random-action rollout: what the environment does, until training exists."""
    import jax
    import numpy as np
    from tqdm import tqdm

    from dexjax import env as env_lib

    if args.envs < 1 or args.steps < 1:
        raise SystemExit("--envs and --steps must be positive")
    env = env_lib.make_env(args.object)
    keys = jax.random.split(jax.random.key(args.seed), args.envs)
    print(f"building {args.envs} environments ({args.object}); the first call compiles")
    with runtime.Watchdog(timeout_s=900) as watchdog:
        start = time.perf_counter()
        state = jax.block_until_ready(jax.jit(jax.vmap(env.reset))(keys))
        step = jax.jit(jax.vmap(env.step))
        key = jax.random.key(args.seed + 1)
        totals = {"reward": 0.0, "episodes": 0.0, "drops": 0.0, "successes": 0.0}
        for _ in tqdm(range(args.steps), desc="rollout", unit="step"):
            key, key_action = jax.random.split(key)
            action = jax.random.uniform(key_action, (args.envs, env.action_size), minval=-1)
            state = step(state, action)
            m = jax.device_get(state.metrics)
            done = m["env/episode_done"]
            totals["reward"] += float(np.sum(m["env/reward"]))
            totals["episodes"] += float(np.sum(done))
            totals["drops"] += float(np.sum(m["env/dropped"]))
            totals["successes"] += float(np.sum(m["reward/success"] > 0))
            watchdog.beat()
        elapsed = time.perf_counter() - start
    print(
        f"{args.steps} control steps x {args.envs} envs of random actions in {elapsed:.1f} s "
        f"(including compilation): {totals['episodes']:.0f} episodes ended, "
        f"{totals['drops']:.0f} drops, {totals['successes']:.0f} goals reached, "
        f"mean reward per step {totals['reward'] / (args.steps * args.envs):+.3f}"
    )
    print("PPO training is not implemented yet; this command ran a random-action rollout.")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from dexjax import bench

    cfg = bench.BenchConfig(
        batches=tuple(args.batch),
        calls=args.calls,
        peers=not args.no_peers,
        peer_impls=tuple(args.peer_impl),
    )
    with runtime.Watchdog(timeout_s=1800):
        rows = bench.run(cfg)
    print(bench.table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    runtime.configure_jax()
    commands = {"train": _rollout, "bench": _bench}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
