"""The paper's Table 4, the randomization ablation (the five rows of randomization.preset).

    python experiments/table4_randomization.py --scale cpu-small|gpu|paper [--reuse]

Trains the policies the table needs (or reuses runs), evaluates them with the paper's
protocol and writes experiments/results/tables/table4_<scale>.{md,png,json}. See
dexjax/experiments.py and experiments/README.md.
"""

import sys

from dexjax import experiments

if __name__ == "__main__":
    sys.exit(experiments.main(sys.argv[1:], experiments.TABLES["table4"]))
