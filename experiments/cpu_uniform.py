"""The paper's goals (uniform over all orientations) on a CPU, taught in stages.

    python experiments/cpu_uniform.py --runs-dir runs/uniform
        [--from experiments/results/cpu_run] [--first-stage STAGE] [--stop-after STAGE]

Each stage is a run of the `cpu` preset (locked wrist, Dense 256 + LSTM 128, every
randomization) with other goals, in RUNS_DIR/<stage>, that starts from the networks of
the stage it names (`dexjax train --init-from`). The first stage run starts from --from,
by default the shipped `cpu` policy (counterclockwise turns about vertical); with
--first-stage, --from is a run or saved policy of the stage that one starts from. The
command is resumable: a finished stage is skipped, an interrupted one resumed from its
checkpoint (Ctrl-C or SIGTERM checkpoints the update in flight).

The stages, at ~2,000 env steps/s on 2 cores (the preset's own hour comes first), each
short enough to run in one sitting and ship its policy (a later stage can start from it on
another machine with --first-stage and --from):
  1-turn             goals turned 0.6-0.8 rad about an axis drawn from the whole sphere  1 h
  2-wider            the same with turns of 0.6-1.6 rad                                  1 h
  3-uniform-a        the paper's goals: uniform over all orientations                    2 h
  3-uniform-entropy  3-uniform-a continued with an entropy bonus of 0.003                2 h
  3-uniform-b        3-uniform-a continued as it was (no entropy bonus)                  2 h

3-uniform-a trains without an entropy bonus, as the preset does; its entropy fell from
11.7 to 8.8 nats of a possible 43 while successes stayed rare. 3-uniform-entropy tried a
small bonus, a third of the paper's 0.01: the entropy rose back to 33.5 nats and the
successes fell, so 3-uniform-b continues 3-uniform-a without it.

Evaluate a stage with the paper's protocol: `dexjax eval RUNS_DIR/3-uniform-b`.
"""

import argparse
import dataclasses
import pathlib
import sys

from dexjax import checkpoint, run
from dexjax import config as config_lib


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    overrides: tuple[str, ...]
    env_steps: int
    after: str | None  # the stage whose networks it starts from (None: --from)


HOUR = config_lib.preset("cpu").total_env_steps  # the preset's run: an hour on 2 cores
UNIFORM = ("env.goal_distribution=uniform",)
EXPLORING = (*UNIFORM, "train.ppo.entropy_coef=0.003")
STAGES = (
    Stage("1-turn", ("env.goal_distribution=turn",), HOUR, None),
    Stage("2-wider", ("env.goal_distribution=turn", "env.goal_turn=0.6,1.6"), HOUR, "1-turn"),
    Stage("3-uniform-a", UNIFORM, 2 * HOUR, "2-wider"),
    Stage("3-uniform-entropy", EXPLORING, 2 * HOUR, "3-uniform-a"),
    Stage("3-uniform-b", UNIFORM, 2 * HOUR, "3-uniform-a"),
)
SHIPPED = pathlib.Path(__file__).parent / "results" / "cpu_run"


def stage_config(stage: Stage) -> config_lib.RunConfig:
    return config_lib.override(
        config_lib.preset("cpu"),
        [
            *stage.overrides,
            f"total_env_steps={stage.env_steps}",
            "checkpoints_to_keep=1000",  # every 200k env steps, ~5 MB each: for curves
        ],
    )


def _finished(run_dir: pathlib.Path, config: config_lib.RunConfig) -> bool:
    mngr = checkpoint.manager(run_dir / checkpoint.CHECKPOINT_DIR)
    try:
        return (mngr.latest_step() or 0) >= config.updates
    finally:
        mngr.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", required=True, type=pathlib.Path)
    parser.add_argument(
        "--from",
        dest="start",
        type=pathlib.Path,
        default=SHIPPED,
        help="networks the first stage run starts from (a run or saved policy)",
    )
    names = [s.name for s in STAGES]
    parser.add_argument(
        "--first-stage", choices=names, default=names[0], help="skip the stages before it"
    )
    parser.add_argument("--stop-after", choices=names, help="the last stage to run")
    args = parser.parse_args(argv)

    first = names.index(args.first_stage)
    networks = {STAGES[first].after: args.start}  # stage name -> directory of its networks
    for stage in STAGES[first:]:
        source = networks[stage.after]
        run_dir = args.runs_dir / stage.name
        config = stage_config(stage)
        try:
            if run.holds_run(run_dir) and _finished(run_dir, config):
                print(f"{stage.name}: finished, in {run_dir}")
            elif run.holds_run(run_dir):
                if run.read_config(run_dir) != config:
                    raise SystemExit(f"{run_dir} holds a run of another config")
                print(f"{stage.name}: resuming {run_dir}")
                run.train(run_dir, resume=True)
            else:
                print(f"{stage.name}: starting {run_dir} from the networks of {source}")
                run.train(run_dir, config, preset="cpu", init_from=source)
        except run.Interrupted as stop:
            print(stop, file=sys.stderr)
            return 128 + stop.signum
        if stage.name == args.stop_after:
            break
        networks[stage.name] = run_dir
    return 0


if __name__ == "__main__":
    sys.exit(main())
