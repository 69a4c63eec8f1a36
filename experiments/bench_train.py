"""Training throughput of dexjax's LSTM PPO against Brax PPO on MuJoCo Playground's LEAP
cube task, in one run (same as `dexjax bench --train`).

nice -n 10 python experiments/bench_train.py --json experiments/results/bench_train_cpu.json
"""

import sys

from dexjax import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", "--train", *sys.argv[1:]]))
