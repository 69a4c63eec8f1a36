"""The paper's Table 5, memory: LSTM against feed-forward networks.

    python experiments/table5_memory.py --scale cpu-small|gpu|paper [--reuse]

Trains the policies the table needs (or reuses runs), evaluates them with the paper's
protocol and writes experiments/results/tables/table5_<scale>.{md,png,json}. See
dexjax/experiments.py and experiments/README.md.
"""

import sys

from dexjax import experiments

if __name__ == "__main__":
    sys.exit(experiments.main(sys.argv[1:], experiments.TABLES["table5"]))
