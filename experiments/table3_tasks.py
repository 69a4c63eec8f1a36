"""The paper's Table 3, consecutive successes by task (block and octagonal prism from state).

    python experiments/table3_tasks.py --scale cpu-small|gpu|paper [--reuse]

Trains the policies the table needs (or reuses runs), evaluates them with the paper's
protocol and writes experiments/results/tables/table3_<scale>.{md,png,json}. See
dexjax/experiments.py and experiments/README.md.
"""

import sys

from dexjax import experiments

if __name__ == "__main__":
    sys.exit(experiments.main(sys.argv[1:], experiments.TABLES["table3"]))
