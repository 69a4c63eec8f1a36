"""A training run's whole configuration, its presets, overrides and JSON form.

    config = preset("cpu")                                  # a RunConfig
    config = override(config, ["train.num_envs=64", "env.goal_distribution=uniform"])
    text = to_json(config); assert from_json(text) == config

A RunConfig nests frozen dataclasses (EnvConfig, TrainConfig, ...). Overrides name a field
by its dotted path; the new value is parsed by the type of the field's current value, and
an unknown path or a value of the wrong type is an error that names what is valid.
"""

import dataclasses
import json
from typing import Any

from dexjax import env as env_lib
from dexjax import networks
from dexjax import ppo as ppo_lib
from dexjax import train as train_lib


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What `dexjax train` runs: the task, the learner and the length of the run."""

    env: env_lib.EnvConfig = env_lib.EnvConfig()
    train: train_lib.TrainConfig = train_lib.TrainConfig()
    total_env_steps: int = 1_000_000
    """The run stops after the first update that reaches this many environment steps."""
    checkpoint_every: int = 10
    """Chunks (compiled calls of `train.updates_per_chunk` updates) between checkpoints."""
    checkpoints_to_keep: int = 3
    max_skipped_updates: int = 20
    """The run stops with an error after this many consecutive updates skipped for
    non-finite losses, gradients or statistics (its last checkpoint is kept)."""

    def __post_init__(self):
        if self.total_env_steps < 1 or self.checkpoint_every < 1 or self.checkpoints_to_keep < 1:
            raise ValueError("total_env_steps, checkpoint_every, checkpoints_to_keep must be >= 1")
        if self.max_skipped_updates < 1:
            raise ValueError("max_skipped_updates must be >= 1")
        if self.env.action_bins != self.train.network.action_bins:
            raise ValueError(
                f"env.action_bins ({self.env.action_bins}) and train.network.action_bins "
                f"({self.train.network.action_bins}) must agree"
            )

    @property
    def updates(self) -> int:
        """PPO updates in the whole run (whole chunks: rounded up)."""
        per_chunk = self.train.steps_per_update * self.train.updates_per_chunk
        chunks = -(-self.total_env_steps // per_chunk)
        return chunks * self.train.updates_per_chunk


def _cpu() -> RunConfig:
    """An hour on a 2-core CPU with the C engine (compilation included): the locked wrist,
    goals that turn the block counterclockwise (seen from above) by 0.6-0.8 rad about the
    vertical from its orientation when drawn ("yaw_turn": each success is a turn of at
    least 0.2 rad), absolute joint targets ("center"), every randomization, small
    networks, 256 environments x 16 steps, a discount of 0.99 and no entropy bonus
    (experiments/sweep_cpu.py and docs/results.md say why)."""
    return RunConfig(
        env=env_lib.EnvConfig(
            locked_wrist=True,
            goal_distribution="yaw_turn",
            goal_turn=(0.6, 0.8),
            goal_turn_direction="counterclockwise",
            relative_to="center",
        ),
        train=train_lib.TrainConfig(
            network=networks.NetworkConfig(hidden=256, lstm=128),
            ppo=ppo_lib.PPOConfig(gamma=0.99, entropy_coef=0.0),
            num_envs=256,
            rollout_length=16,
            epochs=4,
            num_minibatches=4,
            updates_per_chunk=10,
        ),
        total_env_steps=7_331_840,  # 1,790 updates: 60 min measured on 2 CPU cores
        checkpoint_every=5,
    )


def _smoke() -> RunConfig:
    """Seconds of training after compilation: for tests and for checking an install."""
    return RunConfig(
        env=env_lib.EnvConfig(
            locked_wrist=True,
            goal_distribution="yaw",
            relative_to="target",
            settle_steps=5,
        ),
        train=train_lib.TrainConfig(
            network=networks.NetworkConfig(hidden=16, lstm=8),
            num_envs=4,
            rollout_length=4,
            epochs=1,
            num_minibatches=2,
            updates_per_chunk=2,
        ),
        total_env_steps=64,
        checkpoint_every=1,
    )


def _gpu() -> RunConfig:
    """One GPU: the full task and the paper's networks with fewer environments. On N GPUs
    (one process per host, every GPU in one mesh) keep 2,048 environments and 8 minibatches
    per GPU: train.num_envs=2048*N, train.num_minibatches=8*N."""
    return RunConfig(
        env=env_lib.EnvConfig(),
        train=train_lib.TrainConfig(
            network=networks.NetworkConfig(hidden=1024, lstm=512),
            num_envs=2048,
            rollout_length=10,
            epochs=4,
            num_minibatches=8,
            updates_per_chunk=10,
        ),
        total_env_steps=2_000_000_000,
        checkpoint_every=10,
    )


def _paper() -> RunConfig:
    """The paper's hyperparameters (Appendix D, Table 10): the full task with every
    randomization, Dense 1024 -> LSTM 512, 10-step chunks, and its batch (the paper's
    optimizer batch is 512 chunks of 10 steps). Sized for 8 GPUs, as the paper's: 2,048
    environments and minibatches of 64 per GPU."""
    return RunConfig(
        env=env_lib.EnvConfig(),
        train=train_lib.TrainConfig(
            network=networks.NetworkConfig(hidden=1024, lstm=512),
            num_envs=16384,
            rollout_length=10,
            epochs=4,
            num_minibatches=32,
            updates_per_chunk=10,
        ),
        total_env_steps=10_000_000_000,
        checkpoint_every=10,
    )


PRESETS = {"smoke": _smoke, "cpu": _cpu, "gpu": _gpu, "paper": _paper}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def default_preset() -> str:
    """ "cpu" where no accelerator is present, "gpu" otherwise."""
    import jax

    return "cpu" if jax.default_backend() == "cpu" else "gpu"


# ---------------------------------------------------------------------------------------
# Overrides


def _parse(path: str, text: str, current: Any) -> Any:
    """`text` as a value of the type of `current` (the field's present value)."""

    def fail(kind: str):
        raise ValueError(f"{path} takes {kind}, got {text!r}")

    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        fail("a boolean (true/false)")
    if isinstance(current, int):
        try:
            return int(text.replace("_", ""))
        except ValueError:
            fail("an integer")
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            fail("a number")
    if isinstance(current, str):
        return text
    if isinstance(current, tuple):
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        if len(parts) != len(current):
            fail(f"{len(current)} comma-separated values")
        return tuple(_parse(path, p.strip(), c) for p, c in zip(parts, current, strict=True))
    fail(f"a value like {current!r}")


def _set(obj: Any, path: list[str], text: str, full: str) -> Any:
    names = [f.name for f in dataclasses.fields(obj)]
    head = path[0]
    if head not in names:
        prefix = full[: len(full) - len(".".join(path))]
        raise ValueError(
            f"unknown config key {full!r}; valid keys at {prefix or 'the top'!s}: "
            + ", ".join(prefix + n for n in names)
        )
    current = getattr(obj, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"{full!r}: {head} is a value, not a group")
        return dataclasses.replace(obj, **{head: _set(current, path[1:], text, full)})
    if dataclasses.is_dataclass(current):
        raise ValueError(f"{full!r} is a group; set one of its fields, e.g. {full}.<field>")
    return dataclasses.replace(obj, **{head: _parse(full, text, current)})


def override(config: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply `group.field=value` assignments, e.g. `train.ppo.lr=1e-4`."""
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like group.field=value")
        key, text = item.split("=", 1)
        config = _set(config, key.strip().split("."), text.strip(), key.strip())
    return config


# ---------------------------------------------------------------------------------------
# JSON


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def to_json(config: RunConfig) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


def _from_dict(template: Any, data: dict, path: str) -> Any:
    """A dataclass like `template` with the values in `data` (missing keys keep the
    template's value, so configs saved by older versions still load)."""
    names = {f.name for f in dataclasses.fields(template)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown config keys at {path or 'the top'}: {sorted(unknown)}")
    values = {}
    for name, value in data.items():
        current = getattr(template, name)
        if dataclasses.is_dataclass(current):
            values[name] = _from_dict(current, value, f"{path}{name}.")
        elif isinstance(current, tuple):
            values[name] = tuple(value)
        else:
            values[name] = value
    return dataclasses.replace(template, **values)


def from_dict(data: dict) -> RunConfig:
    return _from_dict(RunConfig(), data, "")


def from_json(text: str) -> RunConfig:
    return from_dict(json.loads(text))
