"""The paper's tables as commands: scales, training or reusing runs, evaluation, tables, plots.

    python experiments/table3_tasks.py --scale cpu-small
    python experiments/table4_randomization.py --scale gpu --runs-dir runs/tables --reuse
    python experiments/table5_memory.py --scale cpu-small --run lstm=runs/cpu-1

Each table is a `TableSpec`: rows of policies (`PolicySpec`: object, randomization preset of
Table 4, LSTM or feed-forward networks) with the paper's figures beside them. A `Scale`
says how long each policy trains and how it is evaluated. Policies are trained into
`<runs-dir>/<scale>/<policy>`, so tables that share a policy (block, every randomization,
LSTM is a row of all three) share its run when `--reuse` is given.
"""

import argparse
import dataclasses
import json
import pathlib
import textwrap
import time

import numpy as np

from dexjax import config as config_lib
from dexjax import randomization


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big each policy of a table is, and how it is evaluated."""

    name: str
    preset: str
    """The `dexjax.config` preset the policies start from."""
    overrides: tuple[str, ...]
    """`--set` overrides on top of the preset (e.g. a shorter run)."""
    trials: int
    """Evaluation trials per policy (the paper: 100)."""
    timeout_s: float
    """Simulated seconds without a success that end a trial (the paper: 80)."""
    cost: str
    """What a run of one policy costs at this scale (measured or estimated; says which)."""
    meaningful: bool
    """Whether differences between rows can be read as results at this scale."""
    vision: "VisionScale"
    """What the vision row of Table 3 renders and trains at this scale."""


@dataclasses.dataclass(frozen=True)
class VisionScale:
    """The pose estimator of Table 3's vision row at one scale: its rendered data (from
    the block policy's own rollouts), its network and how long it trains."""

    dataset_states: int
    """Rendered states (3 camera images each) of the pose network's training set."""
    held_out_states: int
    """Rendered states of the held-out set (other rollouts) the pose errors are measured on."""
    resolution: str
    """`dexjax.vision.render.VisionConfig` preset: `cpu` (64x64) or `paper` (200x200)."""
    dataset_envs: int
    """Environments rolled out side by side while rendering (also the render batch)."""
    pose_preset: str
    """`dexjax.vision.pose_net.preset`: `cpu` or `paper`."""
    pose_steps: int
    """Minibatches of 64 image triples the pose network trains on (the paper: 400,000)."""
    halve_every: int
    """Minibatches after which the pose network's learning rate halves (the paper: 20,000)."""
    cost: str
    """What the vision row costs on top of the block policy (measured or estimated)."""


# The paper's vision set-up: 1M rendered states from policy rollouts, 200x200 images, its
# network, 400,000 minibatches of 64 with the rate halved every 20,000.
_PAPER_VISION = VisionScale(
    dataset_states=1_000_000,
    held_out_states=10_000,
    resolution="paper",
    dataset_envs=1_024,
    pose_preset="paper",
    pose_steps=400_000,
    halve_every=20_000,
    cost=(
        "an estimate, not a measurement: 3M images of 200x200 to render (about 360 GB "
        "of uint8 pixels before compression) and 400,000 minibatches of the paper's "
        "network, about 6 h on one A100-class GPU at an assumed 20 minibatches/s "
        "(neither the renderer nor the pose network has run on a GPU here)"
    ),
)

SCALES = {
    "cpu-small": Scale(
        name="cpu-small",
        preset="cpu",
        # 100 PPO updates of 32 environments x 10 steps: minutes per policy on a quiet
        # 2-core CPU (the whole table must fit in a session on a shared one).
        overrides=(
            "total_env_steps=32000",
            "train.num_envs=32",
            "train.rollout_length=10",
            "train.num_minibatches=2",
        ),
        trials=20,
        timeout_s=16.0,
        cost="a few minutes per policy on a 2-core CPU (see experiments/README.md)",
        meaningful=False,
        # 2,000 states at 64x64 and 500 minibatches: the pose network has barely begun (held
        # out: 19.5 mm / 108 degrees; the 20,000-state CPU run of README.md was at 11 mm / 73
        # degrees after 1,500), but the whole row fits in about 30 min on the shared CPU.
        vision=VisionScale(
            dataset_states=2_000,
            held_out_states=500,
            resolution="cpu",
            dataset_envs=64,
            pose_preset="cpu",
            pose_steps=500,
            halve_every=250,
            cost=(
                "measured on the shared 2-core CPU (experiments/README.md): about 30 min, 18 of "
                "them rendering, 4 training the pose network, 8 evaluating"
            ),
        ),
    ),
    "gpu": Scale(
        name="gpu",
        preset="gpu",
        overrides=(),
        trials=100,
        timeout_s=80.0,
        cost=(
            "an estimate, not a measurement: 2B env steps per policy, about 11 h on one "
            "A100-class GPU at an assumed 50k env steps/s (MJX's speed for this hand on a "
            "GPU has not been measured yet)"
        ),
        meaningful=True,
        vision=_PAPER_VISION,
    ),
    "paper": Scale(
        name="paper",
        preset="paper",
        overrides=(),
        trials=100,
        timeout_s=80.0,
        cost=(
            "an estimate, not a measurement: 10B env steps per policy, about 14 h on 8 "
            "A100-class GPUs at an assumed 200k env steps/s in all (not measured)"
        ),
        meaningful=True,
        vision=_PAPER_VISION,
    ),
}


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """One policy a table needs."""

    name: str
    """Directory name of its run under `<runs-dir>/<scale>/`."""
    object: str = "block"
    randomization: str = "all"
    """A row of Table 4: a name for `dexjax.randomization.preset`."""
    policy_memory: bool = True
    """An LSTM policy (True) or a feed-forward one (Dense -> Dense)."""
    value_memory: bool = True
    """An LSTM value network (True) or a feed-forward one; needs a feed-forward policy."""
    random_actions: bool = False
    """Evaluate uniformly random actions on the task instead (nothing is trained)."""

    def __post_init__(self):
        if self.policy_memory and not self.value_memory:
            raise ValueError("an LSTM policy with a feed-forward value network is not supported")


@dataclasses.dataclass(frozen=True)
class PaperFigure:
    """The paper's number(s) for a row; None where the paper gives none."""

    mean: float | None = None
    std: float | None = None
    median: float | None = None


@dataclasses.dataclass(frozen=True)
class RowSpec:
    label: str
    policy: PolicySpec | None
    """None: the row cannot be run yet (see `pending`)."""
    paper: PaperFigure | None = None
    pending: str = ""
    """Why a row without a policy is empty (shown in the table)."""
    vision: bool = False
    """Evaluate the policy with the object pose a pose estimator finds in rendered camera
    images (trained for the row at the scale's `VisionScale`) instead of the true pose."""


@dataclasses.dataclass(frozen=True)
class TableSpec:
    key: str
    title: str
    paper_setting: str
    """Where the paper's column comes from (simulation or real robot, how many trials)."""
    rows: tuple[RowSpec, ...]
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Row:
    """A row as measured: the evaluation summary (`EvalResult.summary()`) or nothing."""

    spec: RowSpec
    summary: dict | None
    run_dir: str = ""
    env_steps: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0
    eval_reused: bool = False
    """The summary was saved in the run by an earlier command (see `evaluate_run`)."""
    pose: "PoseRecord | None" = None
    """The vision row's pose estimator: its run, held-out errors and costs."""


@dataclasses.dataclass(frozen=True)
class PoseRecord:
    """The pose estimator of a vision row, as made or reused."""

    run_dir: str
    """The `dexjax vision train` run."""
    checkpoint: int
    """Its minibatch count at the checkpoint used."""
    errors: dict
    """Held-out errors (`evaluate_pose.evaluate_run`): position_mm_mean, rotation_deg_mean, ..."""
    data_s: float = 0.0
    """Seconds spent rendering the training and held-out sets (0 for a given pose run)."""
    train_s: float = 0.0
    """Seconds the pose network trained (its run's own time when reused)."""
    given: bool = False
    """Taken from `--run POLICY-pose=POSE_RUN` rather than made for the row."""


BLOCK = PolicySpec("block-all-lstm")
TABLES = {
    "table3": TableSpec(
        key="table3",
        title="Table 3: consecutive successes by task (simulation)",
        paper_setting="simulation, 100 trials",
        rows=(
            RowSpec(
                "block, state",
                BLOCK,
                PaperFigure(43.4, 13.8, 50),
            ),
            RowSpec(
                "octagonal prism, state",
                PolicySpec("octagon-all-lstm", object="octagon"),
                PaperFigure(29.0, 19.7, 30),
            ),
            # The block policy of the state row, evaluated with the pose a CNN estimates
            # from the three rendered cameras (trained on renders of that policy's rollouts).
            RowSpec("block, vision", BLOCK, PaperFigure(30.0, 10.3, 33), vision=True),
            RowSpec(
                "block, random actions (reference)", PolicySpec("block-random", random_actions=True)
            ),
        ),
        notes=(
            "The paper's block row is its free-wrist policy; with a locked wrist it reports "
            "44.2 ± 13.4 (median 50).",
        ),
    ),
    "table4": TableSpec(
        key="table4",
        title="Table 4: ablation of randomizations",
        paper_setting="real robot, mean of 10 trials (the paper gives no simulated ablation)",
        rows=(
            RowSpec("all randomizations", BLOCK, PaperFigure(mean=18.8)),
            RowSpec(
                "no randomizations",
                PolicySpec("block-none-lstm", randomization="none"),
                PaperFigure(mean=1.1),
            ),
            RowSpec(
                "no observation noise",
                PolicySpec("block-no_observation_noise-lstm", randomization="no_observation_noise"),
                PaperFigure(mean=15.1),
            ),
            RowSpec(
                "no physics randomizations",
                PolicySpec("block-no_physics-lstm", randomization="no_physics"),
                PaperFigure(mean=3.5),
            ),
            RowSpec(
                "no unmodeled effects",
                PolicySpec("block-no_unmodeled-lstm", randomization="no_unmodeled"),
                PaperFigure(mean=3.5),
            ),
        ),
        notes=(
            "Each policy is trained and evaluated with its own randomizations (the paper "
            "evaluated all of them on the real robot, which this simulation cannot stand in "
            "for: a policy trained without randomizations is here also tested without them).",
        ),
    ),
    "table5": TableSpec(
        key="table5",
        title="Table 5: memory, LSTM against feed-forward networks",
        paper_setting="real robot, median of 10 trials",
        rows=(
            RowSpec("LSTM policy, LSTM value", BLOCK, PaperFigure(median=13)),
            RowSpec(
                "feed-forward policy, LSTM value",
                PolicySpec("block-all-ffpi", policy_memory=False),
                PaperFigure(median=3.5),
            ),
            RowSpec(
                "feed-forward policy, feed-forward value",
                PolicySpec("block-all-ff", policy_memory=False, value_memory=False),
                PaperFigure(median=3),
            ),
        ),
        notes=(
            "Feed-forward networks replace the LSTM by a second Dense + ReLU layer of the "
            "same width: `train.network.policy_memory=false` for the policy alone, "
            "`train.network.lstm=0` for both.",
        ),
    ),
}


# ---------------------------------------------------------------------------------------
# Configs and runs


def run_config(scale: Scale, policy: PolicySpec) -> config_lib.RunConfig:
    """The RunConfig of `policy` at `scale`: the scale's preset and overrides, then the
    policy's object, randomizations and networks."""
    base = config_lib.override(config_lib.preset(scale.preset), list(scale.overrides))
    env = dataclasses.replace(
        base.env,
        scene=dataclasses.replace(base.env.scene, object=policy.object),
        randomization=randomization.preset(policy.randomization),
    )
    network = base.train.network
    if not policy.value_memory:  # both feed-forward
        network = dataclasses.replace(network, lstm=0)
    elif not policy.policy_memory:
        network = dataclasses.replace(network, policy_memory=False)
    train = dataclasses.replace(base.train, network=network)
    return dataclasses.replace(base, env=env, train=train)


def check_compatible(policy: PolicySpec, config: config_lib.RunConfig, source: str) -> None:
    """Refuse a given run whose task or networks are not the row's."""
    problems = []
    if config.env.scene.object != policy.object:
        problems.append(f"object {config.env.scene.object!r}, the row needs {policy.object!r}")
    if config.env.randomization != randomization.preset(policy.randomization):
        problems.append(f"randomizations differ from the preset {policy.randomization!r}")
    network = config.train.network
    for name, has, needs in (
        ("policy", bool(network.policy_lstm), policy.policy_memory),
        ("value network", bool(network.value_lstm), policy.value_memory),
    ):
        if has != needs:
            kind = "an LSTM" if needs else "a feed-forward"
            problems.append(f"the row needs {kind} {name}")
    if problems:
        raise ValueError(f"{source} does not fit row {policy.name!r}: " + "; ".join(problems))


def _finished_update(run_dir: pathlib.Path) -> int | None:
    from dexjax import checkpoint

    mngr = checkpoint.manager(run_dir / checkpoint.CHECKPOINT_DIR)
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


def _elapsed_s(run_dir: pathlib.Path) -> float:
    from dexjax import logs

    rows = logs.read_metrics(run_dir)
    return float(rows[-1].get("time/elapsed_s") or 0.0) if rows else 0.0


def train_or_reuse(
    run_dir: pathlib.Path, config: config_lib.RunConfig, preset: str, reuse: bool, progress: bool
) -> tuple[float, int]:
    """Make sure `run_dir` holds a finished run of `config`: train it, resume it, or (with
    `reuse`) take the finished run already there. Returns (training seconds, env steps)."""
    from dexjax import run

    if run.holds_run(run_dir):
        if not reuse:
            raise ValueError(
                f"{run_dir} already holds a run: pass --reuse to use it, or another --runs-dir"
            )
        saved = run.read_config(run_dir)
        if saved != config:
            raise ValueError(
                f"{run_dir} holds a run of another config than this scale's; "
                "remove it or choose another --runs-dir"
            )
        done = _finished_update(run_dir)
        if done is None:
            raise ValueError(
                f"{run_dir} holds a run stopped before its first checkpoint: "
                "remove it to train it again"
            )
        if done < config.updates:
            run.train(run_dir, resume=True, progress=progress)
        return _elapsed_s(run_dir), config.updates * config.train.steps_per_update
    result = run.train(run_dir, config, preset=preset, progress=progress)
    return result.seconds, result.env_steps


def eval_file(scale: Scale) -> str:
    """Where a run keeps its evaluation at `scale` (so tables sharing a policy share it)."""
    return f"eval-{scale.name}.json"


def evaluate_run(
    run_dir: pathlib.Path | None,
    config: config_lib.RunConfig,
    scale: Scale,
    random_actions: bool,
    progress: bool,
    reuse: bool = False,
    pose_run: pathlib.Path | None = None,
) -> tuple[dict, bool]:
    """The protocol's summary for a run's latest checkpoint (or for random actions), and
    whether it was reused. A run's summary is saved in it (`eval_file`) with the protocol
    it was measured with; `reuse` takes a saved one of the same protocol and checkpoint.

    With `pose_run` (a `dexjax vision train` run) the policy sees the object pose its
    network estimates from the three cameras rendered of every state; the summary is then
    saved in the pose run, with the policy's run and the pose checkpoint in its protocol."""
    from dexjax import evaluate, run

    eval_config = evaluate.EvalConfig(
        trials=scale.trials,
        timeout_s=scale.timeout_s,
        policy="random" if random_actions else "trained",
    )
    if random_actions:
        return evaluate.evaluate(config, None, eval_config, progress=progress).summary(), False
    env = run.make_env(config)
    learner = evaluate.load_learner(run_dir, config, env)
    protocol = {
        "trials": eval_config.trials,
        "timeout_s": eval_config.timeout_s,
        "seed": eval_config.seed,
        "sample": eval_config.sample,
        "checkpoint_update": int(learner.update),
    }
    saved = pathlib.Path(run_dir) / eval_file(scale)
    if pose_run is not None:
        protocol["policy_run"] = str(run_dir)
        protocol["pose_run"] = str(pose_run)
        protocol["pose_checkpoint"] = pose_checkpoint(pose_run)
        saved = pathlib.Path(pose_run) / eval_file(scale)
    if reuse and saved.exists():
        record = json.loads(saved.read_text())
        if record.get("protocol") == protocol:
            return record["summary"], True
    vision, renderer = None, None
    if pose_run is not None:
        from dexjax.vision import evaluate_pose

        # The renderer owns the buffers of `vision`'s render context: keep it until done.
        vision, renderer = evaluate_pose.load_vision_pose(pose_run, env.mj_model, scale.trials)
    result = evaluate.evaluate(config, learner, eval_config, progress=progress, vision=vision)
    summary = result.summary()
    del renderer
    saved.write_text(json.dumps({"protocol": protocol, "summary": summary}, indent=2) + "\n")
    return summary, False


# ---------------------------------------------------------------------------------------
# The vision row: rendered data from the policy's rollouts, the pose estimator


HELD_OUT_SEED = 1
"""Seed of the held-out set's rollouts and renders (the training set's is 0)."""


def vision_dir(runs_dir: pathlib.Path, scale: Scale, policy: PolicySpec) -> pathlib.Path:
    """Where a vision row keeps `data/`, `held-out/` (datasets), `pose/` (the pose run)."""
    return pathlib.Path(runs_dir) / scale.name / f"{policy.name}-vision"


def pose_name(policy: PolicySpec) -> str:
    """The `--run NAME=POSE_RUN` name that gives a vision row an existing pose run."""
    return f"{policy.name}-pose"


def dataset_config(vision: VisionScale, num_images: int, seed: int):
    """The `dexjax.vision.dataset.DatasetConfig` of a vision row's training or held-out set."""
    from dexjax.vision import dataset, render

    presets = {"cpu": render.VisionConfig.cpu, "paper": render.VisionConfig.paper}
    if vision.resolution not in presets:
        raise ValueError(f"unknown vision resolution {vision.resolution!r}: cpu or paper")
    return dataset.DatasetConfig(
        num_images=num_images,
        vision=presets[vision.resolution](),
        num_envs=vision.dataset_envs,
        seed=seed,
    )


def pose_train_config(vision: VisionScale):
    """The `dexjax.vision.train_pose.PoseTrainConfig` of a vision row's pose network."""
    from dexjax.vision import train_pose

    steps = vision.pose_steps
    # Two checkpoints and held-out evaluations over the run (at most every 10,000).
    every = max(1, min(10_000, steps // 2))
    return dataclasses.replace(
        train_pose.default_config(vision.pose_preset),
        steps=steps,
        halve_every=vision.halve_every,
        log_every=max(1, min(100, steps // 10)),
        eval_every=every,
        checkpoint_every=every,
    )


def dataset_or_reuse(
    directory: pathlib.Path, config, policy_run: pathlib.Path, reuse: bool, progress: bool
) -> float:
    """Make sure `directory` holds the dataset `config` renders of `policy_run`'s rollouts:
    render it or (with `reuse`) take the one already there. Returns its rendering seconds."""
    from dexjax.vision import dataset

    manifest_path = directory / dataset.MANIFEST
    if not manifest_path.exists():
        start = time.perf_counter()
        dataset.build_dataset(directory, config, policy_run, progress)
        return time.perf_counter() - start
    if not reuse:
        raise ValueError(
            f"{directory} already holds a dataset: pass --reuse to use it, or another --runs-dir"
        )
    manifest = json.loads(manifest_path.read_text())
    source = manifest.get("source") or {}
    wanted = {
        "count": config.num_images,
        "seed": config.seed,
        "num_envs": config.num_envs,
        "steps_between": config.steps_between,
        # Through JSON, as the manifest stores it (tuples become lists).
        "vision_config": json.loads(json.dumps(dataclasses.asdict(config.vision))),
        "source run": str(policy_run),
        "source checkpoint": _finished_update(policy_run),
    }
    found = {
        **{k: manifest.get(k) for k in ("count", "seed", "num_envs", "steps_between")},
        "vision_config": manifest.get("vision_config"),
        "source run": source.get("run_dir"),
        "source checkpoint": source.get("checkpoint_update"),
    }
    differ = sorted(k for k in wanted if wanted[k] != found[k])
    if differ:
        raise ValueError(
            f"{directory} holds another dataset than this scale's (differs in "
            f"{', '.join(differ)}); remove it or choose another --runs-dir"
        )
    return float(manifest.get("seconds") or 0.0)


def pose_checkpoint(pose_run: pathlib.Path) -> int:
    """The latest checkpoint (minibatch count) of a pose run; an error if it has none."""
    from dexjax.vision import train_pose

    train_pose.read_config(pose_run)  # a clear error when this is not a pose run
    mngr = train_pose.checkpoint_manager(pose_run)
    try:
        step = mngr.latest_step()
    finally:
        mngr.close()
    if step is None:
        raise ValueError(f"{pose_run} has no pose checkpoint")
    return int(step)


def pose_or_reuse(
    pose_run: pathlib.Path,
    data_dir: pathlib.Path,
    held_out_dir: pathlib.Path,
    config,
    reuse: bool,
    progress: bool,
) -> float:
    """Make sure `pose_run` holds a finished pose run of `config` on `data_dir`: train it
    or (with `reuse`) take the one already there. Returns its training seconds."""
    from dexjax.vision import train_pose

    if not (pose_run / train_pose.CONFIG_FILE).exists():
        result = train_pose.train(data_dir, pose_run, config, held_out_dir, progress)
        return result.seconds
    if not reuse:
        raise ValueError(
            f"{pose_run} already holds a pose run: pass --reuse to use it, or another --runs-dir"
        )
    saved = train_pose.read_config(pose_run)
    # The position statistics come from the training set, not from the scale.
    net = dataclasses.replace(saved.net, pos_mean=config.net.pos_mean, pos_std=config.net.pos_std)
    if dataclasses.replace(saved, net=net) != config:
        raise ValueError(
            f"{pose_run} holds a pose run of another config than this scale's; "
            "remove it or choose another --runs-dir"
        )
    trained_on = train_pose.read_data_record(pose_run).get("train")
    if trained_on is None or pathlib.Path(trained_on) != data_dir.absolute():
        raise ValueError(f"{pose_run} was trained on {trained_on}, not on {data_dir.absolute()}")
    step = pose_checkpoint(pose_run)
    if step != config.steps:
        raise ValueError(
            f"{pose_run} stopped at minibatch {step} of {config.steps} (pose runs do not "
            "resume): remove it to train it again"
        )
    return _elapsed_s(pose_run)


def held_out_errors(pose_run: pathlib.Path, held_out_dir: pathlib.Path, reuse: bool) -> dict:
    """Pose errors of the run's latest checkpoint on the held-out set (mm, degrees), kept in
    the pose run (`held-out-errors.json`) and reused for the same checkpoint and set."""
    from dexjax.vision import evaluate_pose

    saved = pose_run / "held-out-errors.json"
    key = {"data": str(held_out_dir), "checkpoint": pose_checkpoint(pose_run)}
    if reuse and saved.exists():
        record = json.loads(saved.read_text())
        if {k: record.get(k) for k in key} == key:
            return record
    errors = {**evaluate_pose.evaluate_run(pose_run, held_out_dir), **key}
    saved.write_text(json.dumps(errors, indent=2) + "\n")
    return errors


def prepare_pose(
    policy: PolicySpec,
    policy_run: pathlib.Path,
    scale: Scale,
    runs_dir: pathlib.Path,
    reuse: bool,
    given: dict[str, str],
    progress: bool,
) -> "PoseRecord":
    """The vision row's pose estimator: render a training set and a held-out set from the
    policy's own rollouts, train the pose network (or take a given or, with `reuse`,
    existing run), measure its held-out errors."""
    directory = vision_dir(runs_dir, scale, policy)
    held_out_dir = directory / "held-out"
    n = scale.vision.held_out_states
    data_s = dataset_or_reuse(
        held_out_dir,
        dataset_config(scale.vision, n, HELD_OUT_SEED),
        policy_run,
        reuse,
        progress,
    )
    if pose_name(policy) in given:
        pose_run = pathlib.Path(given[pose_name(policy)])
        errors = held_out_errors(pose_run, held_out_dir, reuse)
        return PoseRecord(
            str(pose_run), errors["checkpoint"], errors, data_s, _elapsed_s(pose_run), True
        )
    data_dir = directory / "data"
    data_s += dataset_or_reuse(
        data_dir,
        dataset_config(scale.vision, scale.vision.dataset_states, 0),
        policy_run,
        reuse,
        progress,
    )
    pose_run = directory / "pose"
    config = pose_train_config(scale.vision)
    train_s = pose_or_reuse(pose_run, data_dir, held_out_dir, config, reuse, progress)
    errors = held_out_errors(pose_run, held_out_dir, reuse)
    return PoseRecord(str(pose_run), errors["checkpoint"], errors, data_s, train_s)


def measure_row(
    spec: RowSpec,
    scale: Scale,
    runs_dir: pathlib.Path,
    reuse: bool,
    given: dict[str, str],
    progress: bool = True,
) -> Row:
    """Train (or reuse) and evaluate the policy of one row."""
    from dexjax import run

    policy = spec.policy
    if policy is None:
        return Row(spec=spec, summary=None)
    if policy.random_actions:
        config = run_config(scale, policy)
        start = time.perf_counter()
        summary, _ = evaluate_run(None, config, scale, True, progress)
        return Row(spec, summary, eval_s=time.perf_counter() - start)
    if policy.name in given:
        run_dir = pathlib.Path(given[policy.name])
        config = run.read_config(run_dir)
        check_compatible(policy, config, str(run_dir))
        if _finished_update(run_dir) is None:
            raise ValueError(f"{run_dir} has no checkpoint to evaluate")
        train_s = _elapsed_s(run_dir)
        env_steps = int((_finished_update(run_dir) or 0) * config.train.steps_per_update)
    else:
        run_dir = runs_dir / scale.name / policy.name
        config = run_config(scale, policy)
        train_s, env_steps = train_or_reuse(run_dir, config, scale.preset, reuse, progress)
    pose = None
    if spec.vision:
        pose = prepare_pose(policy, run_dir, scale, runs_dir, reuse, given, progress)
    start = time.perf_counter()
    pose_run = None if pose is None else pathlib.Path(pose.run_dir)
    summary, reused = evaluate_run(run_dir, config, scale, False, progress, reuse, pose_run)
    seconds = time.perf_counter() - start
    return Row(
        spec, summary, str(run_dir), env_steps, train_s, seconds, eval_reused=reused, pose=pose
    )


# ---------------------------------------------------------------------------------------
# Tables and plots


def _paper_cells(paper: PaperFigure | None) -> tuple[str, str]:
    if paper is None:
        return "-", "-"
    if paper.mean is None:
        mean = "-"
    elif paper.std is None:
        mean = f"{paper.mean:.1f}"
    else:
        mean = f"{paper.mean:.1f} ± {paper.std:.1f}"
    median = "-" if paper.median is None else f"{paper.median:g}"
    return mean, median


def format_table(table: TableSpec, rows: list[Row], scale: Scale, extra_notes=()) -> str:
    """The table in Markdown, in the paper's format: mean ± std, median, sorted trials,
    with the paper's figures beside each row."""
    out = [f"## {table.title}, scale `{scale.name}`", ""]
    out.append(
        "| policy | consecutive successes, mean ± std | median | trials | drops | timeouts "
        "| paper, mean | paper, median |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    sorted_lines = []
    for row in rows:
        paper_mean, paper_median = _paper_cells(row.spec.paper)
        s = row.summary
        if s is None:
            cells = [f"({row.spec.pending})", "", "", "", ""]
        else:
            cells = [
                f"{s['mean']:.1f} ± {s['std']:.1f}",
                f"{s['median']:g}",
                str(s["trials"]),
                str(s["drops"]),
                str(s["timeouts"]),
            ]
            sorted_lines.append(f"- {row.spec.label}: {s['sorted']}")
        out.append("| " + " | ".join([row.spec.label, *cells, paper_mean, paper_median]) + " |")
    out += ["", "Sorted trials:", "", *sorted_lines, ""]
    notes = [
        f"Paper's columns: {table.paper_setting}.",
        f"Evaluation: the paper's protocol (a new goal after each success, a trial ends on a "
        f"drop, at 50 successes or after {scale.timeout_s:g} s without a success; the paper "
        f"allows 80 s) over {scale.trials} trials, most likely actions, each policy's own "
        "randomizations.",
        *table.notes,
    ]
    if not scale.meaningful:
        notes.append(
            f"At scale `{scale.name}` the policies are far too short-trained for the "
            "differences between rows to mean anything: this checks that the pipeline runs, "
            "it does not reproduce the paper."
        )
    notes += [_pose_note(row, scale) for row in rows if row.pose is not None]
    notes += list(extra_notes)
    out += ["Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


PAPER_POSE_ERRORS = (3.71, 3.23)
"""The paper's pose errors on MuJoCo renders (Table 6): position mm, rotation degrees."""


def _pose_note(row: Row, scale: Scale) -> str:
    """What the vision row's pose estimator is and its held-out errors beside the paper's."""
    pose, e = row.pose, row.pose.errors
    mm, deg = PAPER_POSE_ERRORS
    if pose.given:
        made = f"the given pose run `{pose.run_dir}` (checkpoint {pose.checkpoint:,})"
    else:
        v = scale.vision
        made = (
            f"a `{v.pose_preset}` pose network trained for {v.pose_steps:,} minibatches of 64 "
            f"on {v.dataset_states:,} states rendered ({v.resolution} resolution preset) from "
            "the policy's own rollouts"
        )
    ratio = min(e["position_mm_mean"] / mm, e["rotation_deg_mean"] / deg)
    verdict = (
        f" At scale `{scale.name}` the estimator is far from the paper's: its errors are "
        f"{ratio:.0f}x the paper's or more, so this row measures the pipeline, not what "
        "vision costs the paper's policy."
        if ratio >= 2
        else ""
    )
    return (
        f"{row.spec.label}: the object pose comes from {made}. Held-out errors on "
        f"{e['images']:,} states of other rollouts: {e['position_mm_mean']:.1f} mm and "
        f"{e['rotation_deg_mean']:.1f}° (mean; median {e['position_mm_median']:.1f} mm, "
        f"{e['rotation_deg_median']:.1f}°), the paper's {mm} mm and {deg}° (MuJoCo renders, "
        f"Table 6).{verdict}"
    )


def plot_table(table: TableSpec, rows: list[Row], scale: Scale, path: pathlib.Path):
    """Each row's trials (dots), mean ± std (bar) and median (diamond) beside the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_paper) = plt.subplots(
        1,
        2,
        figsize=(12, 0.6 * len(rows) + 2.5),
        sharey=True,
        constrained_layout=True,
        gridspec_kw={"width_ratios": (2, 1)},
    )
    labels = [r.spec.label for r in rows]
    y = np.arange(len(rows))[::-1]
    rng = np.random.default_rng(0)  # vertical jitter of the dots only
    for yi, row in zip(y, rows, strict=True):
        s = row.summary
        if s is None:
            pending = textwrap.shorten(row.spec.pending, 40, placeholder="...")
            ax.text(0, yi, f"({pending})", va="center", fontsize=8, color="gray")
            continue
        trials = np.asarray(s["sorted"], float)
        ax.scatter(trials, yi + rng.uniform(-0.15, 0.15, len(trials)), s=10, alpha=0.5)
        ax.errorbar(s["mean"], yi, xerr=s["std"], fmt="o", color="black", capsize=4)
        ax.scatter(s["median"], yi, marker="D", color="tab:red", zorder=3)
    ax.set_title(f"dexjax, scale {scale.name} ({rows and _trials(rows)} trials per row)")
    for yi, row in zip(y, rows, strict=True):
        p = row.spec.paper
        if p is None:
            continue
        if p.mean is not None:
            ax_paper.errorbar(p.mean, yi, xerr=p.std or 0.0, fmt="o", color="black", capsize=4)
        if p.median is not None:
            ax_paper.scatter(p.median, yi, marker="D", color="tab:red", zorder=3)
    setting = textwrap.shorten(table.paper_setting, 40, placeholder="...")
    ax_paper.set_title(f"paper ({setting})", fontsize=9)
    for a in (ax, ax_paper):
        a.set_xlabel("consecutive successes")
        a.grid(alpha=0.3)
    ax.set_xlim(left=-0.5)
    ax.set_yticks(y, labels)
    ax_paper.set_xlim(-1, 51)
    fig.suptitle(f"{table.title}\ndots: trials, black: mean ± std, red diamond: median")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return pathlib.Path(path)


def _trials(rows: list[Row]) -> int:
    counts = {r.summary["trials"] for r in rows if r.summary is not None}
    return max(counts) if counts else 0


def write_results(
    table: TableSpec, rows: list[Row], scale: Scale, out_dir: pathlib.Path, extra_notes=()
) -> dict[str, pathlib.Path]:
    """`<table>_<scale>.md`, `.png` and `.json` (the summaries and where they came from)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{table.key}_{scale.name}"
    paths = {k: out_dir / f"{stem}.{k}" for k in ("md", "png", "json")}
    paths["md"].write_text(format_table(table, rows, scale, extra_notes))
    plot_table(table, rows, scale, paths["png"])
    record = {
        "table": table.key,
        "scale": dataclasses.asdict(scale),
        "rows": [
            {
                "label": r.spec.label,
                "policy": None if r.spec.policy is None else dataclasses.asdict(r.spec.policy),
                "paper": None if r.spec.paper is None else dataclasses.asdict(r.spec.paper),
                "pending": r.spec.pending,
                "run_dir": r.run_dir,
                "env_steps": r.env_steps,
                "train_s": r.train_s,
                "eval_s": r.eval_s,
                "eval_reused": r.eval_reused,
                "vision": r.spec.vision,
                "pose": None if r.pose is None else dataclasses.asdict(r.pose),
                "summary": r.summary,
            }
            for r in rows
        ],
    }
    paths["json"].write_text(json.dumps(record, indent=2) + "\n")
    return paths


# ---------------------------------------------------------------------------------------
# The command


def given_names(table: TableSpec) -> set[str]:
    """The names `--run NAME=DIR` takes: the trained policies, and a pose run per vision row."""
    names = {r.policy.name for r in table.rows if r.policy and not r.policy.random_actions}
    return names | {pose_name(r.policy) for r in table.rows if r.policy and r.vision}


def parser(table: TableSpec) -> argparse.ArgumentParser:
    names = sorted(given_names(table))
    p = argparse.ArgumentParser(description=f"{table.title}: train, evaluate, tabulate")
    p.add_argument("--scale", required=True, choices=sorted(SCALES), help="how big each policy is")
    p.add_argument(
        "--runs-dir",
        default="runs/tables",
        help="runs are trained into RUNS_DIR/SCALE/POLICY (default: runs/tables)",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="use runs already in --runs-dir (finish unfinished ones) instead of refusing them",
    )
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="POLICY=RUN_DIR",
        help=(
            "take this policy (or, for NAME-pose, the vision row's pose estimator: a `dexjax "
            f"vision train` run) from an existing run directory; names: {', '.join(names)}"
        ),
    )
    p.add_argument(
        "--out-dir",
        default="experiments/results/tables",
        help="where the table (.md), plot (.png) and summaries (.json) are written",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_given(items: list[str], table: TableSpec) -> dict[str, str]:
    names = given_names(table)
    given = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise ValueError(f"--run {item!r} must look like POLICY=RUN_DIR")
        if name not in names:
            raise ValueError(
                f"--run: no policy {name!r} in {table.key}; choose from {sorted(names)}"
            )
        given[name] = path
    return given


def main(argv: list[str] | None, table: TableSpec) -> int:
    """Train or reuse each row's policy, evaluate it, write the table. Exit code."""
    import sys

    from dexjax import runtime

    args = parser(table).parse_args(argv)
    try:
        given = parse_given(args.run, table)
    except ValueError as error:
        print(f"{table.key}: error: {error}", file=sys.stderr)
        return 2
    runtime.configure_jax()
    scale = SCALES[args.scale]
    start = time.perf_counter()
    rows: list[Row] = []
    out_dir = pathlib.Path(args.out_dir)
    for index, spec in enumerate(table.rows):
        if index:  # after each row, so that a stopped command leaves the rows it measured
            partial = rows + [_not_yet(s) for s in table.rows[index:]]
            write_results(
                table, partial, scale, out_dir, [_timing_note(rows, time.perf_counter() - start)]
            )
        print(f"[{table.key}] {spec.label}", flush=True)
        try:
            rows.append(
                measure_row(
                    spec,
                    scale,
                    pathlib.Path(args.runs_dir),
                    args.reuse,
                    given,
                    not args.no_progress,
                )
            )
        except ValueError as error:
            print(f"{table.key}: error: {error}", file=sys.stderr)
            return 2
        # Each row compiles its own programs; keeping them all would exhaust the process's
        # memory maps on a long table (see `runtime.memory_map_use`).
        runtime.free_compiled_programs_near_map_limit()
    total = time.perf_counter() - start
    notes = [_timing_note(rows, total)]
    paths = write_results(table, rows, scale, out_dir, notes)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _not_yet(spec: RowSpec) -> Row:
    """A row the command has not reached (in the tables it writes while it runs)."""
    pending = spec.pending or "not measured: the command stopped before this row"
    return Row(dataclasses.replace(spec, pending=pending), None)


def _timing_note(rows: list[Row], total_s: float) -> str:
    parts = []
    for r in rows:
        if r.summary is None:
            continue
        steps = (
            f"{r.env_steps:,} env steps, trained in {r.train_s / 60:.1f} min, " if r.run_dir else ""
        )
        evaluated = (
            "evaluation reused" if r.eval_reused else f"evaluated in {r.eval_s / 60:.1f} min"
        )
        if r.pose is not None:
            p = r.pose
            data = "given pose run" if p.given else f"rendered in {p.data_s / 60:.1f} min"
            trained = f"pose network trained in {p.train_s / 60:.1f} min"
            steps = f"{steps}pose data {data}, {trained}, "
        parts.append(f"{r.spec.label}: {steps}{evaluated}")
    return (
        f"Wall-clock of this command: {total_s / 60:.1f} min ("
        + "; ".join(parts)
        + "; reused runs count the time of their own training)."
    )
