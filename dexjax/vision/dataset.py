"""Rendered datasets for the pose estimator: randomized camera images labelled with the
object's pose, written in shards with a manifest and read back as a stream.

Layout of a dataset directory:
    manifest.json        count, shard files, resolution, cameras, vision config, source,
                         seed, package versions
    shard_00000.npz      images uint8 [N, cameras, H, W, 3], pos float32 [N, 3] (world
                         frame, m), quat float32 [N, 4] (wxyz, world frame, w >= 0)
    grid.png             a grid of randomized renders, for people to look at

States come from rollouts of the hand environment (every physics randomization on):
uniformly random actions, or a trained run's policy. Consecutive recorded states of one
environment are `steps_between` control steps apart.
"""

import dataclasses
import importlib.metadata
import json
import pathlib
import time
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

from dexjax import constants as c
from dexjax.vision import render as vision_render

MANIFEST = "manifest.json"
GRID = "grid.png"
FORMAT_VERSION = 1


@struct.dataclass
class Batch:
    """Images with their labels (host NumPy arrays, or device arrays inside jit)."""

    images: np.ndarray  # uint8 [N, cameras, H, W, 3]
    pos: np.ndarray  # float32 [N, 3] object position, world frame (m)
    quat: np.ndarray  # float32 [N, 4] object orientation, wxyz, world frame, w >= 0


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """How a dataset is collected and written."""

    num_images: int = 20_000
    """States written (each with one image per camera)."""
    vision: vision_render.VisionConfig = vision_render.VisionConfig.cpu()
    """Resolution and visual randomization."""
    num_envs: int = 64
    """Environments rolled out side by side; also the renderer's batch."""
    steps_between: int = 4
    """Control steps (80 ms each) between two recorded states of one environment."""
    shard_size: int = 1024
    """States per shard file (the last shard may hold fewer)."""
    seed: int = 0
    """Seed of the rollouts and of the randomization."""
    sample_actions: bool = True
    """With a trained policy: sample its actions (more varied states) or take the mode."""

    def __post_init__(self):
        for name in ("num_images", "num_envs", "steps_between", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


# ---- labels ----------------------------------------------------------------------------


def object_qpos_address(mj_model: mujoco.MjModel) -> int:
    """qpos index of the object's free joint (position, then wxyz orientation)."""
    joint = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_JOINT, c.OBJECT_JOINT)
    if joint < 0 or mj_model.jnt_type[joint] != mujoco.mjtJoint.mjJNT_FREE:
        raise ValueError(f"the model has no free joint {c.OBJECT_JOINT!r}")
    return int(mj_model.jnt_qposadr[joint])


def object_pose(mj_model: mujoco.MjModel, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object position [N, 3] and unit quaternion [N, 4] (w >= 0) from qpos [N, nq].

    The object's free joint hangs from the world body, so its qpos is its world pose.
    """
    adr = object_qpos_address(mj_model)
    qpos = np.asarray(qpos, np.float64)
    pos = qpos[:, adr : adr + 3]
    quat = qpos[:, adr + 3 : adr + 7]
    quat = quat / np.linalg.norm(quat, axis=1, keepdims=True)
    quat = np.where(quat[:, :1] < 0, -quat, quat)  # q and -q are one rotation
    return pos.astype(np.float32), quat.astype(np.float32)


# ---- writing -----------------------------------------------------------------------------


def _versions() -> dict:
    names = ("dexjax", "mujoco", "mujoco-mjx", "warp-lang", "jax")
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _write_shard(directory: pathlib.Path, index: int, batch: Batch) -> dict:
    name = f"shard_{index:05d}.npz"
    # Written under a temporary name first: a shard that exists is complete.
    tmp = directory / f".{name}.tmp.npz"
    np.savez(tmp, images=batch.images, pos=batch.pos, quat=batch.quat)
    tmp.rename(directory / name)
    return {"file": name, "count": int(batch.images.shape[0])}


def _concat(batches: list[Batch]) -> Batch:
    return jax.tree.map(lambda *xs: np.concatenate(xs), *batches)


def _take(batch: Batch, index) -> Batch:
    """The states `index` (a slice or an index array) of a batch."""
    return jax.tree.map(lambda x: x[index], batch)


def write_dataset(
    directory: str | pathlib.Path,
    renderer: vision_render.VisionRenderer,
    states: Iterable[tuple[np.ndarray, np.ndarray]],
    num_images: int,
    key: jax.Array,
    shard_size: int = 1024,
    metadata: dict | None = None,
    progress: bool = True,
) -> dict:
    """Render `num_images` states with randomization and write them as shards.

    Args:
      directory: created if needed; must not hold a dataset already.
      renderer: draws batches of exactly `renderer.batch` states.
      states: yields (qpos [batch, nq], mocap_quat [batch, nmocap, 4]) batches.
      num_images: states to write (the last rendered batch is cut to fit).
      key: randomization key; the i-th rendered batch uses `fold_in(key, i)`.
      shard_size: states per shard.
      metadata: extra manifest entries (source, seed, ...).

    Returns:
      The manifest (also written to `directory/manifest.json`).
    """
    from tqdm import tqdm

    directory = pathlib.Path(directory)
    if (directory / MANIFEST).exists():
        raise ValueError(f"{directory} already holds a dataset ({MANIFEST}); choose a new --out")
    if num_images < 1 or shard_size < 1:
        raise ValueError("num_images and shard_size must be positive")
    directory.mkdir(parents=True, exist_ok=True)
    start = time.time()
    shards, pending, done = [], [], 0
    bar = tqdm(total=num_images, unit="state", desc="rendering", disable=not progress)
    states = iter(states)
    index = 0
    while done < num_images:
        try:
            qpos, mocap_quat = next(states)
        except StopIteration:
            raise ValueError(f"the state source ran out after {done} of {num_images}") from None
        images = np.asarray(renderer.render(jax.random.fold_in(key, index), qpos, mocap_quat))
        index += 1
        take = min(len(images), num_images - done)
        pos, quat = object_pose(renderer.mj_model, np.asarray(qpos)[:take])
        pending.append(Batch(images=images[:take], pos=pos, quat=quat))
        done += take
        bar.update(take)
        buffered = sum(len(b.pos) for b in pending)
        while buffered >= shard_size or (done == num_images and buffered):
            merged = _concat(pending)
            head = _take(merged, slice(0, shard_size))
            shards.append(_write_shard(directory, len(shards), head))
            rest = _take(merged, slice(shard_size, None))
            pending = [rest] if len(rest.pos) else []
            buffered = len(rest.pos)
    bar.close()
    cfg = renderer.config
    manifest = {
        "format": FORMAT_VERSION,
        "count": done,
        "shards": shards,
        "resolution": {"height": cfg.height, "width": cfg.width},
        "cameras": list(c.CAMERAS),
        "vision_config": dataclasses.asdict(cfg),
        "labels": {
            "pos": "object position, world frame, metres",
            "quat": "object orientation, wxyz, world frame, w >= 0",
        },
        "versions": _versions(),
        "seconds": round(time.time() - start, 1),
        **(metadata or {}),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_grid(images: np.ndarray, path: str | pathlib.Path, columns: int = 4) -> pathlib.Path:
    """A PNG of states [N, cameras, H, W, 3] in a grid, each cell the cameras side by side."""
    from PIL import Image

    from dexjax import render as video

    images = np.asarray(images)
    if images.ndim != 5 or images.dtype != np.uint8 or not len(images):
        raise ValueError(f"images must be uint8 [N > 0, cameras, H, W, 3], got {images.shape}")
    cells = video.tile(images)  # [N, H, cameras * W, 3]
    n, h, w, _ = cells.shape
    rows = -(-n // columns)
    canvas = np.full((rows * (h + 2), columns * (w + 2), 3), 255, np.uint8)
    for i, cell in enumerate(cells):
        r, col = divmod(i, columns)
        canvas[r * (h + 2) : r * (h + 2) + h, col * (w + 2) : col * (w + 2) + w] = cell
    path = pathlib.Path(path)
    Image.fromarray(canvas).save(path)
    return path


# ---- reading -----------------------------------------------------------------------------


def read_manifest(directory: str | pathlib.Path) -> dict:
    """The manifest of a dataset directory, with a clear error if there is none."""
    path = pathlib.Path(directory) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{directory} holds no dataset (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown dataset format {manifest.get('format')!r}")
    return manifest


def _read_shard(directory: pathlib.Path, entry: dict) -> Batch:
    with np.load(directory / entry["file"]) as shard:
        batch = Batch(images=shard["images"], pos=shard["pos"], quat=shard["quat"])
    if len(batch.pos) != entry["count"]:
        raise ValueError(f"{entry['file']} holds {len(batch.pos)} states, not {entry['count']}")
    return batch


def load_split(directory: str | pathlib.Path, start: int = 0, count: int | None = None) -> Batch:
    """States [start, start + count) of a dataset in memory (reads only the shards needed)."""
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    total = manifest["count"]
    count = total - start if count is None else count
    if start < 0 or count < 1 or start + count > total:
        raise ValueError(f"states [{start}, {start + count}) are outside the {total} written")
    parts, offset = [], 0
    for entry in manifest["shards"]:
        lo, hi = max(start, offset), min(start + count, offset + entry["count"])
        if lo < hi:
            shard = _read_shard(directory, entry)
            parts.append(_take(shard, slice(lo - offset, hi - offset)))
        offset += entry["count"]
    return _concat(parts)


def _rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from a typed JAX key (host-side shuffling only)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def iterate_batches(
    directory: str | pathlib.Path,
    batch_size: int,
    key: jax.Array,
    epochs: int = 1,
    shards_in_memory: int = 2,
) -> Iterator[Batch]:
    """Shuffled batches of `batch_size` states, `epochs` passes over the dataset.

    Streams: at most `shards_in_memory` shards (plus one batch) are held at a time. Each
    epoch visits the shards in a random order and shuffles the states of the shards in
    memory; the order is a function of `key`. Batches never straddle epochs; the states
    left over at the end of an epoch (fewer than `batch_size`) are dropped.
    """
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    if batch_size < 1 or epochs < 1 or shards_in_memory < 1:
        raise ValueError("batch_size, epochs and shards_in_memory must be positive")
    if batch_size > manifest["count"]:
        raise ValueError(f"batch_size {batch_size} exceeds the {manifest['count']} states")
    entries = manifest["shards"]
    for epoch in range(epochs):
        rng = _rng(jax.random.fold_in(key, epoch))
        order = rng.permutation(len(entries))
        carry = None
        for begin in range(0, len(order), shards_in_memory):
            parts = [
                _read_shard(directory, entries[i]) for i in order[begin : begin + shards_in_memory]
            ]
            if carry is not None:
                parts.insert(0, carry)
            pool = _concat(parts)
            pool = _take(pool, rng.permutation(len(pool.pos)))
            full = len(pool.pos) // batch_size * batch_size
            for b in range(0, full, batch_size):
                yield _take(pool, slice(b, b + batch_size))
            carry = _take(pool, slice(full, None)) if full < len(pool.pos) else None


# ---- states from rollouts ------------------------------------------------------------------


def rollout_states(
    config: DatasetConfig, run_dir: str | pathlib.Path | None = None
) -> tuple[Iterator[tuple[np.ndarray, np.ndarray]], "object", dict]:
    """Batches of (qpos, mocap_quat) from environments acting randomly or with a run's policy.

    Returns the iterator, the environment (its `mj_model` is the physics model to render)
    and a description of the source for the manifest.
    """
    from dexjax import config as config_lib
    from dexjax import evaluate, networks, run

    if run_dir is None:
        run_config = config_lib.preset("cpu")
        learner, policy = None, "random"
        source = {"policy": "random", "env_preset": "cpu"}
    else:
        run_config = run.read_config(pathlib.Path(run_dir))
        policy = "trained"
        source = {"policy": "trained", "run_dir": str(run_dir)}
    env = run.make_env(run_config)
    if run_dir is not None:
        learner = evaluate.load_learner(pathlib.Path(run_dir), run_config, env)
        source["checkpoint_update"] = int(learner.update)
    eval_config = evaluate.EvalConfig(policy=policy, sample=config.sample_actions)
    n = config.num_envs

    @jax.jit
    def start(key):
        state = jax.vmap(env.reset)(jax.random.split(key, n))
        return state, networks.initial_carry(n, run_config.train.network.lstm), jnp.ones(n, bool)

    @jax.jit
    def advance(state, carry, starting, key):
        def one(i, loop):
            state, carry, starting = loop
            key_act = jax.random.fold_in(key, i)
            carry, action = evaluate.act(
                run_config, env, eval_config, learner, carry, state, starting, key_act
            )
            state = jax.vmap(env.step)(state, action)
            return state, carry, state.done > 0

        return jax.lax.fori_loop(0, config.steps_between, one, (state, carry, starting))

    def states():
        key = jax.random.key(config.seed)
        key_reset, key_steps = jax.random.split(key)
        loop = start(key_reset)
        for i in range(2**31):
            loop = advance(*loop, jax.random.fold_in(key_steps, i))
            data = loop[0].data
            yield np.asarray(data.qpos), np.asarray(data.mocap_quat)

    return states(), env, source


def build_dataset(
    directory: str | pathlib.Path,
    config: DatasetConfig,
    run_dir: str | pathlib.Path | None = None,
    progress: bool = True,
) -> dict:
    """Roll out, render and write a dataset, then its grid picture. Returns the manifest."""
    directory = pathlib.Path(directory)
    if (directory / MANIFEST).exists():
        raise ValueError(f"{directory} already holds a dataset ({MANIFEST}); choose a new --out")
    states, env, source = rollout_states(config, run_dir)
    renderer = vision_render.VisionRenderer(env.mj_model, config.vision, config.num_envs)
    key_render = jax.random.fold_in(jax.random.key(config.seed), 1)
    manifest = write_dataset(
        directory,
        renderer,
        states,
        config.num_images,
        key_render,
        shard_size=config.shard_size,
        metadata={
            "source": source,
            "seed": config.seed,
            "num_envs": config.num_envs,
            "steps_between": config.steps_between,
            "object": env.config.scene.object,
        },
        progress=progress,
    )
    first = load_split(directory, 0, min(16, manifest["count"]))
    write_grid(first.images, directory / GRID)
    return manifest
