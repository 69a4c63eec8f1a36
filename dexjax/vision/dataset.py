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

This module is the one reader of such directories (pose training, evaluation, export and
the notebooks all go through it): `open_dataset` (the manifest checked, the image shape
from it), `iterate_batches` (shuffled, streamed; endless for training), `in_order` (the
manifest's order, for evaluation), `load_split` (a range in memory) and `position_stats`.
Only complete datasets are read, i.e. ones whose manifest has been written.
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
    return _write_manifest(
        directory,
        shards,
        (cfg.height, cfg.width),
        dataclasses.asdict(cfg),
        {"seconds": round(time.time() - start, 1), **(metadata or {})},
    )


def _write_manifest(
    directory: pathlib.Path,
    shards: list[dict],
    resolution: tuple[int, int],
    vision_config: dict | None,
    metadata: dict,
) -> dict:
    """Written last: a directory with a manifest holds a complete dataset."""
    height, width = resolution
    manifest = {
        "format": FORMAT_VERSION,
        "count": sum(s["count"] for s in shards),
        "shards": shards,
        "resolution": {"height": height, "width": width},
        "cameras": list(c.CAMERAS),
        "vision_config": vision_config,
        "labels": {
            "pos": "object position, world frame, metres",
            "quat": "object orientation, wxyz, world frame, w >= 0",
        },
        "versions": _versions(),
        **metadata,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_arrays(
    directory: str | pathlib.Path,
    batch: Batch,
    shard_size: int = 1024,
    vision_config: dict | None = None,
    metadata: dict | None = None,
) -> dict:
    """Write labelled images already in memory as a dataset (shards, then the manifest).

    For images rendered elsewhere (e.g. by a `VisionRenderer` in a notebook or a test);
    `batch.images` must be uint8 [N, cameras, H, W, 3] with the scene's cameras in order.
    `vision_config` (the `VisionConfig` fields) records how they were drawn. Returns the
    manifest.
    """
    directory = pathlib.Path(directory)
    if (directory / MANIFEST).exists():
        raise ValueError(f"{directory} already holds a dataset ({MANIFEST}); choose a new --out")
    images = np.asarray(batch.images)
    n = len(images)
    if images.dtype != np.uint8 or images.ndim != 5 or images.shape[1:2] != (len(c.CAMERAS),):
        raise ValueError(
            f"images must be uint8 [N, {len(c.CAMERAS)}, H, W, 3], got {images.dtype} "
            f"{images.shape}"
        )
    if n < 1 or np.shape(batch.pos) != (n, 3) or np.shape(batch.quat) != (n, 4):
        raise ValueError(f"pos and quat must be [N, 3] and [N, 4] with N = {n} > 0")
    if shard_size < 1:
        raise ValueError("shard_size must be positive")
    directory.mkdir(parents=True, exist_ok=True)
    batch = Batch(
        images=images,
        pos=np.asarray(batch.pos, np.float32),
        quat=np.asarray(batch.quat, np.float32),
    )
    shards = [
        _write_shard(directory, i, _take(batch, slice(lo, lo + shard_size)))
        for i, lo in enumerate(range(0, n, shard_size))
    ]
    return _write_manifest(
        directory, shards, images.shape[2:4], vision_config, {**(metadata or {})}
    )


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
#
# Only complete datasets are read: `write_dataset` writes the manifest last, so a directory
# without one is either not a dataset or still being written (training on a set while it is
# written, which an earlier reader allowed, is not supported: wait for the manifest).


class DatasetError(ValueError):
    """A directory that is not a complete dataset, or not one that fits what reads it."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A complete dataset directory and its manifest."""

    directory: pathlib.Path
    manifest: dict

    @property
    def count(self) -> int:
        """States written (each with one image per camera)."""
        return int(self.manifest["count"])

    @property
    def image_shape(self) -> tuple[int, int, int, int]:
        """The shape of one state's images: (cameras, H, W, 3)."""
        res = self.manifest["resolution"]
        return (len(self.manifest["cameras"]), int(res["height"]), int(res["width"]), 3)

    @property
    def vision_config(self) -> dict | None:
        """How the images were drawn (`VisionConfig` fields), as the manifest records it."""
        return self.manifest.get("vision_config")


MANIFEST_KEYS = ("format", "count", "shards", "resolution", "cameras")


def read_manifest(directory: str | pathlib.Path) -> dict:
    """The manifest of a dataset directory, with a clear error if there is none."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"dataset directory {directory} does not exist")
    path = directory / MANIFEST
    if not path.exists():
        partial = (
            " (shards but no manifest: still being written?)" if _shard_files(directory) else ""
        )
        raise DatasetError(f"{directory} holds no dataset (no {MANIFEST}){partial}")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise DatasetError(f"{path}: unknown dataset format {manifest.get('format')!r}")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise DatasetError(f"{path} lacks {missing}")
    return manifest


def _shard_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(directory.glob("shard_*.npz"))


def open_dataset(directory: str | pathlib.Path) -> Dataset:
    """A complete dataset (its manifest read and checked); a clear error otherwise."""
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    if manifest["count"] < 1 or sum(e["count"] for e in manifest["shards"]) != manifest["count"]:
        raise DatasetError(f"{directory}: the shards of {MANIFEST} do not add up to its count")
    for entry in manifest["shards"]:
        if not (directory / entry["file"]).exists():
            raise DatasetError(f"{directory}: shard {entry['file']} is missing")
    return Dataset(directory, manifest)


def check_image_shape(data: Dataset, image_shape: tuple[int, ...], what: str) -> None:
    """A clear error unless `data` holds images of `image_shape`; `what` names the other side
    and ends in a verb, e.g. "the training set X has"."""
    if tuple(data.image_shape) != tuple(image_shape):
        raise DatasetError(
            f"{data.directory} has images {data.image_shape} but {what} "
            f"{tuple(image_shape)} (cameras, H, W, 3): render both at one resolution"
        )


def _as_dataset(data: "Dataset | str | pathlib.Path") -> Dataset:
    return data if isinstance(data, Dataset) else open_dataset(data)


def _read_shard(data: Dataset, entry: dict) -> Batch:
    path = data.directory / entry["file"]
    with np.load(path) as shard:
        missing = {"images", "pos", "quat"} - set(shard.files)
        if missing:
            raise DatasetError(f"{path} lacks {sorted(missing)}")
        batch = Batch(
            images=shard["images"],
            pos=shard["pos"].astype(np.float32),
            quat=shard["quat"].astype(np.float32),
        )
    if len(batch.pos) != entry["count"] or len(batch.images) != entry["count"]:
        raise DatasetError(f"{path} holds {len(batch.pos)} states, not {entry['count']}")
    if batch.images.shape[1:] != data.image_shape or batch.images.dtype != np.uint8:
        raise DatasetError(
            f"{path}: images {batch.images.dtype} {batch.images.shape[1:]}, but the manifest "
            f"says uint8 {data.image_shape}"
        )
    return batch


def load_split(
    directory: "Dataset | str | pathlib.Path", start: int = 0, count: int | None = None
) -> Batch:
    """States [start, start + count) of a dataset in memory (reads only the shards needed)."""
    data = _as_dataset(directory)
    total = data.count
    count = total - start if count is None else count
    if start < 0 or count < 1 or start + count > total:
        raise ValueError(f"states [{start}, {start + count}) are outside the {total} written")
    parts, offset = [], 0
    for entry in data.manifest["shards"]:
        lo, hi = max(start, offset), min(start + count, offset + entry["count"])
        if lo < hi:
            shard = _read_shard(data, entry)
            parts.append(_take(shard, slice(lo - offset, hi - offset)))
        offset += entry["count"]
    return _concat(parts)


def in_order(
    directory: "Dataset | str | pathlib.Path", batch_size: int, limit: int | None = None
) -> Iterator[Batch]:
    """The first `limit` states (all by default) in the manifest's order, in batches of
    `batch_size` (the last may be smaller). One shard in memory at a time (evaluation)."""
    data = _as_dataset(directory)
    if batch_size < 1 or (limit is not None and limit < 1):
        raise ValueError("batch_size and limit must be positive")
    wanted = data.count if limit is None else min(limit, data.count)
    pending, held, seen = [], 0, 0
    for entry in data.manifest["shards"]:
        if seen >= wanted:
            break
        shard = _read_shard(data, entry)
        shard = _take(shard, slice(0, wanted - seen))
        seen += len(shard.pos)
        pending.append(shard)
        held += len(shard.pos)
        while held >= batch_size or (seen == wanted and held):
            merged = _concat(pending)
            yield _take(merged, slice(0, batch_size))
            rest = _take(merged, slice(batch_size, None))
            pending, held = ([rest], len(rest.pos)) if len(rest.pos) else ([], 0)


def position_stats(
    directory: "Dataset | str | pathlib.Path",
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and standard deviation (m) per axis of a dataset's object positions.

    Reads only the `pos` arrays (an npz member is loaded on access, the images are not).
    """
    data = _as_dataset(directory)
    parts = []
    for entry in data.manifest["shards"]:
        with np.load(data.directory / entry["file"]) as shard:
            parts.append(shard["pos"].astype(np.float64))
    pos = np.concatenate(parts)
    std = np.maximum(pos.std(axis=0), 1e-4)  # a constant axis would divide by zero
    return tuple(float(x) for x in pos.mean(axis=0)), tuple(float(x) for x in std)


def _rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from a typed JAX key (host-side shuffling only)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def iterate_batches(
    directory: "Dataset | str | pathlib.Path",
    batch_size: int,
    key: jax.Array,
    epochs: int | None = 1,
    shards_in_memory: int = 2,
) -> Iterator[Batch]:
    """Shuffled batches of `batch_size` states, `epochs` passes over the dataset (endless
    with `epochs=None`, as training reads it).

    Streams: at most `shards_in_memory` shards (plus one batch) are held at a time. Each
    epoch visits the shards in a random order and shuffles the states of the shards in
    memory; the order is a function of `key`. Batches never straddle epochs; the states
    left over at the end of an epoch (fewer than `batch_size`) are dropped, so an epoch
    gives `count // batch_size` batches.
    """
    data = _as_dataset(directory)
    if batch_size < 1 or (epochs is not None and epochs < 1) or shards_in_memory < 1:
        raise ValueError("batch_size, epochs and shards_in_memory must be positive")
    if batch_size > data.count:
        raise DatasetError(
            f"batch_size {batch_size} exceeds the {data.count} states of {data.directory}"
        )
    entries = data.manifest["shards"]
    epoch = 0
    while epochs is None or epoch < epochs:
        rng = _rng(jax.random.fold_in(key, epoch))
        order = rng.permutation(len(entries))
        carry = None
        for begin in range(0, len(order), shards_in_memory):
            parts = [_read_shard(data, entries[i]) for i in order[begin : begin + shards_in_memory]]
            if carry is not None:
                parts.insert(0, carry)
            pool = _concat(parts)
            pool = _take(pool, rng.permutation(len(pool.pos)))
            full = len(pool.pos) // batch_size * batch_size
            for b in range(0, full, batch_size):
                yield _take(pool, slice(b, b + batch_size))
            carry = _take(pool, slice(full, None)) if full < len(pool.pos) else None
        epoch += 1


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
        return (
            state,
            networks.initial_carry(n, run_config.train.network.policy_lstm),
            jnp.ones(n, bool),
        )

    # The learner is an argument, not closed over: closed-over weights would be baked into
    # the program as constants, so each checkpoint would compile (and be cached) anew.
    @jax.jit
    def advance(learner, state, carry, starting, key):
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
            loop = advance(learner, *loop, jax.random.fold_in(key_steps, i))
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
