"""Cold and warm compile time of dexjax's training function (train.train_chunk).

Run twice with the same --cache-dir: the first run starts from an empty persistent
compilation cache (cold), the second finds the compiled program there (warm).

python experiments/compile_time.py --cache-dir /tmp/cc --preset cpu   # cold
python experiments/compile_time.py --cache-dir /tmp/cc --preset cpu   # warm
"""

import argparse
import json
import pathlib
import time

from dexjax import runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    runtime.configure_jax(args.cache_dir)

    import jax

    from dexjax import config as config_lib
    from dexjax import parallel, run, train

    cache = pathlib.Path(args.cache_dir)
    entries_before = len(list(cache.iterdir()))
    config = config_lib.override(config_lib.preset(args.preset), args.overrides)
    tc = config.train
    env = run.make_env(config)
    mesh = parallel.env_mesh()
    runner = train.distribute(train.init(tc, env, jax.random.key(tc.seed)), mesh)
    t0 = time.perf_counter()
    lowered = train.train_chunk.lower(tc, env, runner, mesh)
    t1, c1 = time.perf_counter(), time.process_time()
    lowered.compile()
    t2, c2 = time.perf_counter(), time.process_time()
    row = {
        "preset": args.preset,
        "overrides": args.overrides,
        "cache_entries_before": entries_before,
        "trace_and_lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "compile_cpu_s": c2 - c1,
        "devices": mesh.size,
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
