"""Environment throughput against native MuJoCo and MuJoCo Playground, in one run.

python experiments/bench_env.py --json bench_env.json      # same as `dexjax bench`
"""

import sys

from dexjax import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", *sys.argv[1:]]))
