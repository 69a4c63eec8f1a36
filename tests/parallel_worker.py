"""One training process for tests/test_parallel.py (run as a subprocess, never imported).

python tests/parallel_worker.py OUT.npz                       # every device of this process
python tests/parallel_worker.py OUT.npz --coordinator localhost:PORT --process-id I
python tests/parallel_worker.py OUT.npz ... --forever         # train until killed
python tests/parallel_worker.py OUT.npz ... --checkpoint DIR  # then save and restore in DIR

Trains the LSTM PPO of dexjax.train (train.distribute + train.train_chunk over a mesh of
every device, as `dexjax train` does) on the Memory probe, whose dynamics are exact, so
runs split differently may differ only by rounding. Process 0 writes the final
parameters, Adam state and normalizers, flattened, to OUT.npz. With --checkpoint, every
process then saves the run's checkpoint into DIR (dexjax.checkpoint, as `dexjax train`
does), restores it, and checks that the restored state equals what it saved.
"""

import argparse
import sys

import numpy as np

from dexjax import runtime

CHUNKS = 2


def config():
    from dexjax import networks, train

    return train.TrainConfig(
        network=networks.NetworkConfig(hidden=16, lstm=8),
        num_envs=8,
        rollout_length=4,
        epochs=2,
        num_minibatches=2,
        updates_per_chunk=3,
        seed=0,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--coordinator")
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--forever", action="store_true")
    parser.add_argument("--checkpoint", metavar="DIR")
    args = parser.parse_args()
    runtime.configure_jax()
    from dexjax import parallel

    if args.coordinator:
        parallel.initialize(
            parallel.DistributedConfig(
                coordinator_address=args.coordinator,
                num_processes=2,
                process_id=args.process_id,
                heartbeat_timeout_s=15,
                shutdown_timeout_s=120,
            )
        )
    import jax

    from dexjax import probes, train

    cfg, env = config(), probes.Memory()
    mesh = parallel.env_mesh()
    parallel.check_divisible(cfg.num_envs, cfg.num_minibatches, mesh)
    runner = train.distribute(train.init(cfg, env, jax.random.key(cfg.seed)), mesh)
    parallel.compile_together(train.train_chunk, cfg, env, runner, mesh, name="train_chunk")
    chunk = 0
    while chunk < CHUNKS or args.forever:
        runner, metrics = train.train_chunk(cfg, env, runner, mesh)
        jax.block_until_ready(metrics)
        chunk += 1
        print(f"chunk {chunk} on {mesh.size} devices", flush=True)
    state = {"params": runner.params, "opt": runner.opt_state, "norm": runner.normalizers}
    state = parallel.host_copy(state)
    losses = parallel.host_copy(metrics)
    if args.checkpoint:
        _save_and_restore(args.checkpoint, cfg, env, mesh, runner, state)
    if parallel.is_writer():
        leaves = jax.tree_util.tree_leaves_with_path(state)
        arrays = {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}
        arrays["loss/policy"] = np.asarray(losses["loss/policy"])
        arrays["loss/value"] = np.asarray(losses["loss/value"])
        np.savez(args.out, **arrays)
    return 0


def _save_and_restore(directory, cfg, env, mesh, runner, state) -> None:
    """Save the run's checkpoint, restore it into a runner placed on the mesh as a resumed
    run does, and fail unless its learner state equals the saved one (every process checks
    its own copy)."""
    import jax

    from dexjax import checkpoint, parallel, train

    mngr = checkpoint.manager(directory)
    step = checkpoint.save(mngr, runner)
    learner = checkpoint.restore(mngr, cfg, env)
    mngr.close()
    # As `dexjax train --resume` does: fresh environments with the restored learner, placed
    # on the mesh.
    fresh = train.init(cfg, env, jax.random.key(cfg.seed + 1))
    resumed = train.distribute(checkpoint.with_learner_state(fresh, learner), mesh)
    restored = parallel.host_copy(
        {"params": resumed.params, "opt": resumed.opt_state, "norm": resumed.normalizers}
    )
    for (path, saved), again in zip(
        jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(restored), strict=True
    ):
        np.testing.assert_array_equal(again, saved, err_msg=jax.tree_util.keystr(path))
    print(f"checkpoint {step} restored in process {jax.process_index()}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
