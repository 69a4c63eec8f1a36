"""Training the pose estimator on a rendered dataset (`dexjax vision train`).

The dataset is a complete directory written by `dexjax vision dataset` (shards of
`images` uint8 [N, cameras, H, W, 3], `pos` float32 [N, 3] (m, world) and `quat` float32
[N, 4] (w, x, y, z, world), and `manifest.json`), read through `dexjax.vision.dataset`:
the image shape comes from the manifest, and minibatches are streamed by
`dataset.iterate_batches` (two shards in memory at a time, shard order and examples
shuffled every epoch), so a set larger than memory trains too. A set still being written
(no manifest yet) is refused: wait until `dexjax vision dataset` has finished.

Optimizer as in the paper (Appendix C.3): Adam, learning rate 5e-4 halved every 20,000
minibatches, weight decay 1e-3 (decoupled, AdamW), minibatches of 64 image triples.

Augmentation. The paper's augmentations act on the simulated state before rendering (20%
unchanged, 40% of states with the object turned 90 degrees about a main axis, 40% with
Gaussian pose jitter): they change what is drawn and the label together, so they belong
where images are rendered (`dexjax.vision.joint` applies them), not to images already on
disk. Training from a dataset uses no augmentation of its own: every image was drawn with
its own visual randomization (camera jitter, colours, lights, contrast, pixel noise).

A run directory holds `config.json` (this module's config, the network's included, with
the position statistics of the training set), `checkpoints/N/` (orbax, the last 2 kept),
`metrics.jsonl` (one row per logging interval) and `curves.png`.
"""

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct

from dexjax import logs
from dexjax.vision import dataset
from dexjax.vision import pose_net as pn

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"


@dataclasses.dataclass(frozen=True)
class PoseTrainConfig:
    preset: str = "cpu"
    """The network preset the run started from (`pose_net.preset`)."""
    net: pn.PoseNetConfig = dataclasses.field(default_factory=lambda: pn.preset("cpu"))
    """The network; its position statistics are filled in from the training set."""
    steps: int = 20_000
    """Minibatches to train on (the paper: 400,000)."""
    batch_size: int = 64
    """Image triples per minibatch (the paper: 64)."""
    learning_rate: float = 5e-4
    """Adam's initial learning rate (the paper: 5e-4)."""
    halve_every: int = 20_000
    """Minibatches after which the learning rate halves (the paper: 20,000)."""
    weight_decay: float = 1e-3
    """Decoupled weight decay (the paper: 1e-3)."""
    seed: int = 0
    """Seeds the parameters and the data order."""
    log_every: int = 100
    """Minibatches between metric rows."""
    eval_every: int = 1_000
    """Minibatches between evaluations on the held-out set (when one is given)."""
    eval_images: int = 500
    """Held-out image triples used by the evaluations during training (the first ones)."""
    checkpoint_every: int = 1_000
    """Minibatches between checkpoints (and one at the end)."""

    def __post_init__(self):
        positive = ("steps", "batch_size", "halve_every", "log_every", "eval_every")
        for name in (*positive, "eval_images", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("learning_rate must be positive and weight_decay non-negative")


def default_config(preset: str = "cpu") -> PoseTrainConfig:
    return PoseTrainConfig(preset=preset, net=pn.preset(preset))


def config_to_json(config: PoseTrainConfig) -> str:
    return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)


def config_from_dict(data: dict) -> PoseTrainConfig:
    """The config of a `config.json`; unknown keys are an error."""
    net = dict(data.get("net", {}))
    unknown = (set(data) - {f.name for f in dataclasses.fields(PoseTrainConfig)}) | (
        set(net) - {f.name for f in dataclasses.fields(pn.PoseNetConfig)}
    )
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    for name, value in net.items():
        if isinstance(value, list):  # JSON arrays back to (nested) tuples
            net[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return PoseTrainConfig(**{**data, "net": pn.PoseNetConfig(**net)})


# ---------------------------------------------------------------------------------------
# Learning


@struct.dataclass
class PoseLearner:
    """What training gathers: parameters, optimizer state and the minibatch count."""

    params: object
    opt_state: object
    step: jax.Array


def optimizer(config: PoseTrainConfig) -> optax.GradientTransformation:
    schedule = optax.exponential_decay(
        config.learning_rate, config.halve_every, decay_rate=0.5, staircase=True
    )
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def init_learner(config: PoseTrainConfig, key: jax.Array, image_shape) -> PoseLearner:
    params = pn.init_params(config.net, key, image_shape)
    return PoseLearner(params, optimizer(config).init(params), jnp.zeros((), jnp.int32))


def batch_metrics(config: pn.PoseNetConfig, raw, pos, q) -> dict[str, jax.Array]:
    terms = pn.loss(config, raw, pos, q)
    pred = pn.decode(config, raw)
    return {
        "loss/total": terms.total,
        "loss/position": terms.position,
        "loss/rotation": terms.rotation,
        "pose/position_mm": jnp.mean(pn.position_error_mm(pred.pos, pos)),
        "pose/rotation_deg": jnp.mean(pn.rotation_error_deg(pred.quat, q)),
    }


def train_step(
    config: PoseTrainConfig, learner: PoseLearner, images, pos, q
) -> tuple[PoseLearner, dict[str, jax.Array]]:
    """One Adam step on a minibatch (images uint8 [B, cameras, H, W, 3], pos, q)."""
    net = pn.PoseNet(config.net)

    def objective(params):
        raw = net.apply({"params": params}, images)
        return pn.loss(config.net, raw, pos, q).total, raw

    (_, raw), grads = jax.value_and_grad(objective, has_aux=True)(learner.params)
    updates, opt_state = optimizer(config).update(grads, learner.opt_state, learner.params)
    params = optax.apply_updates(learner.params, updates)
    metrics = batch_metrics(config.net, raw, pos, q)
    return PoseLearner(params, opt_state, learner.step + 1), metrics


def checkpoint_manager(run_dir: pathlib.Path, keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        (pathlib.Path(run_dir) / CHECKPOINTS).absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        ),
    )


@dataclasses.dataclass(frozen=True)
class TrainResult:
    run_dir: pathlib.Path
    steps: int
    seconds: float
    last_eval: dict | None


def train(
    data_dir: str | pathlib.Path,
    run_dir: str | pathlib.Path,
    config: PoseTrainConfig = PoseTrainConfig(),
    test_dir: str | pathlib.Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the pose network on `data_dir`, writing the run to `run_dir` (a new directory)."""
    from tqdm import tqdm

    from dexjax.vision import evaluate_pose

    data = dataset.open_dataset(data_dir)
    test = dataset.open_dataset(test_dir) if test_dir is not None else None
    if test is not None:
        dataset.check_image_shape(test, data.image_shape, f"the training set {data.directory} has")
    run_dir = pathlib.Path(run_dir)
    if (run_dir / CONFIG_FILE).exists():
        raise ValueError(f"{run_dir} already holds a pose run; choose another --out")
    if config.batch_size > data.count:
        raise dataset.DatasetError(
            f"batch_size {config.batch_size} exceeds the {data.count} states"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    mean, std = dataset.position_stats(data)
    config = dataclasses.replace(
        config, net=dataclasses.replace(config.net, pos_mean=mean, pos_std=std)
    )
    (run_dir / CONFIG_FILE).write_text(config_to_json(config))
    (run_dir / "data.json").write_text(
        json.dumps(
            {
                "train": str(data.directory.absolute()),
                "train_images": data.count,
                "test": None if test is None else str(test.directory.absolute()),
                "image_shape": list(data.image_shape),
                # How the training images were drawn, for rendering alike later (closed loop).
                "vision_config": data.vision_config,
            },
            indent=2,
        )
    )

    key_params, key_data = jax.random.split(jax.random.key(config.seed))
    learner = init_learner(config, key_params, data.image_shape)
    step_fn = jax.jit(
        lambda learner, i, p, q: train_step(config, learner, i, p, q), donate_argnums=0
    )
    mngr = checkpoint_manager(run_dir)
    log = logs.MetricsLog(run_dir, tensorboard=False)
    batches = dataset.iterate_batches(data, config.batch_size, key_data, epochs=None)
    start = time.time()
    sums: dict[str, float] = {}
    last_eval = None
    bar = tqdm(total=config.steps, unit="batch", desc="training pose net", disable=not progress)
    try:
        for step in range(1, config.steps + 1):
            batch = next(batches)
            learner, metrics = step_fn(learner, batch.images, batch.pos, batch.quat)
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + value  # device values: no sync per step
            bar.update(1)
            row = None
            if step % config.log_every == 0 or step == config.steps:
                count = (
                    config.log_every if step % config.log_every == 0 else step % config.log_every
                )
                row = {k: float(v) / count for k, v in jax.device_get(sums).items()}
                sums = {}
                bar.set_postfix(
                    mm=f"{row['pose/position_mm']:.1f}", deg=f"{row['pose/rotation_deg']:.1f}"
                )
            if test is not None and (step % config.eval_every == 0 or step == config.steps):
                errors = evaluate_pose.errors_on(config, learner.params, test, config.eval_images)
                last_eval = {f"eval/{k}": v for k, v in errors.items() if k != "images"}
                row = {**(row or {}), **last_eval}
            if row is not None:
                elapsed = time.time() - start
                log.write(
                    {
                        "update": step,  # the minibatch count, under the key logs reads
                        "images": step * config.batch_size,
                        **row,
                        "time/elapsed_s": elapsed,
                    }
                )
                log.flush()
            if step % config.checkpoint_every == 0 or step == config.steps:
                mngr.save(step, args=ocp.args.StandardSave(jax.device_get(learner)))
                mngr.wait_until_finished()
    finally:
        bar.close()
        log.close()
        mngr.close()
    seconds = time.time() - start
    plot_curves(logs.read_metrics(run_dir), run_dir / logs.CURVES_FILE, title=str(run_dir))
    return TrainResult(run_dir, config.steps, seconds, last_eval)


# ---------------------------------------------------------------------------------------
# Runs on disk


def read_config(run_dir: str | pathlib.Path) -> PoseTrainConfig:
    path = pathlib.Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise ValueError(f"{run_dir} is not a pose run (no {CONFIG_FILE})")
    return config_from_dict(json.loads(path.read_text()))


def read_data_record(run_dir: str | pathlib.Path) -> dict:
    """`data.json` of a pose run: the datasets, their image shape and vision config."""
    return json.loads((pathlib.Path(run_dir) / "data.json").read_text())


def read_image_shape(run_dir: str | pathlib.Path) -> tuple[int, ...]:
    return tuple(read_data_record(run_dir)["image_shape"])


def load_params(run_dir: str | pathlib.Path, step: int | None = None):
    """(config, params, step) of a pose run's checkpoint (the latest unless `step`)."""
    from dexjax.checkpoint import CheckpointError

    config = read_config(run_dir)
    image_shape = read_image_shape(run_dir)
    mngr = checkpoint_manager(run_dir)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None or step not in mngr.all_steps():
            raise CheckpointError(f"no pose checkpoint {step} in {mngr.directory}")
        target = jax.eval_shape(lambda k: init_learner(config, k, image_shape), jax.random.key(0))
        learner = mngr.restore(step, args=ocp.args.StandardRestore(target))
    finally:
        mngr.close()
    return config, learner.params, step


PANELS = (
    ("loss (train)", "loss/total", None),
    ("position error, mm", "pose/position_mm", "eval/position_mm_mean"),
    ("rotation error, degrees", "pose/rotation_deg", "eval/rotation_deg_mean"),
)


def plot_curves(rows: list[dict], path: pathlib.Path, title: str = "") -> pathlib.Path:
    """Training loss and errors (train minibatches; held-out set as dots) vs images seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    seen = np.array([r["images"] for r in rows], dtype=float)
    for ax, (label, key, eval_key) in zip(axes, PANELS, strict=True):
        values = np.array([r.get(key, np.nan) for r in rows], dtype=float)
        ax.plot(seen, values, color="tab:blue", label="training minibatches")
        if eval_key:
            ev = np.array([np.nan if r.get(eval_key) is None else r[eval_key] for r in rows])
            ok = np.isfinite(ev)
            if ok.any():
                ax.plot(seen[ok], ev[ok], "o-", color="tab:orange", label="held-out set")
            ax.legend(fontsize=8)
        ax.set_yscale("log")
        ax.set_title(label)
        ax.set_xlabel("image triples seen")
        ax.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return pathlib.Path(path)
