"""The pose estimator: a CNN from three camera images to the block's position and orientation.

The paper's network (Section 5, Figure 6): one tower per camera with shared weights,
Conv 32 5x5 -> Conv 32 3x3 -> MaxPool 3x3 stride 3 -> ResNet stages of 1x16, 2x32, 2x64
and 2x64 filters (3x3) -> spatial softmax -> flatten; the three towers' features are
concatenated -> FC 128 -> 3 position + 4 quaternion outputs; ReLU throughout.

Inputs are uint8 images [B, cameras, H, W, 3]. Outputs are the position in metres (world
frame) and a unit quaternion (w, x, y, z, world frame): the network's 4 orientation outputs
are normalized. Positions are learned as normalized targets, (pos - mean) / std with the
training set's statistics, which the network carries as constants (`PoseNetConfig`).

The quaternion loss handles q ~ -q (one rotation, two quaternions) by taking the smaller
of the squared distances to q and to -q, which for unit quaternions equals
2 - 2 |<q_pred, q>| = 2 - 2 cos(angle / 2) ~ angle^2 / 4. It is divided by 1/4, the variance
of one component of a uniformly random rotation's quaternion, like the positions are
divided by their variance ("MSE on normalized targets"), so it reads as 4 (2 - 2|<.,.>|)/4
per component: 2 - 2 |<q_pred, q>| in total. The block's faces are coloured distinctly in
the renders, so no other symmetry has to be handled.
"""

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from dexjax import quaternion as quat


@dataclasses.dataclass(frozen=True)
class PoseNetConfig:
    stem: tuple[int, int] = (32, 32)
    """Filters of the two stem convolutions (5x5, then 3x3)."""
    stem_stride: int = 1
    """Stride of the first (5x5) convolution; 1 in the paper (its images are 200x200)."""
    pool: int = 3
    """Window and stride of the max pooling after the stem."""
    stages: tuple[tuple[int, int], ...] = ((1, 16), (2, 32), (2, 64), (2, 64))
    """ResNet stages as (blocks, filters); the paper's 1x16, 2x32, 2x64, 2x64."""
    stage_stride: int = 2
    """Stride of the first block of every stage after the first (the paper does not say;
    2 is ResNet's usual choice and keeps the spatial softmax's maps small)."""
    hidden: int = 128
    """Units of the fully connected layer after the concatenated towers."""
    pos_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Mean of the training positions (m, world); set from the data before training."""
    pos_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Standard deviation of the training positions (m) per axis."""

    def __post_init__(self):
        if min(self.stem) < 1 or self.pool < 1 or self.hidden < 1 or not self.stages:
            raise ValueError("stem filters, pool, hidden units and stages must be positive")
        if any(b < 1 or f < 1 for b, f in self.stages):
            raise ValueError(f"stages must be (blocks >= 1, filters >= 1), not {self.stages}")
        if min(self.pos_std) <= 0:
            raise ValueError(f"pos_std must be positive, not {self.pos_std}")


def preset(name: str) -> PoseNetConfig:
    """`paper`: the paper's network. `cpu`: a narrower, shallower tower that strides
    early (a 64x64 image leaves 11x11 feature maps for the spatial softmax), for a CPU:
    about 10x fewer multiply-adds than `paper` at 64x64."""
    if name == "paper":
        return PoseNetConfig()
    if name == "cpu":
        return PoseNetConfig(
            stem=(16, 16), stem_stride=2, stages=((1, 16), (1, 32)), stage_stride=1
        )
    raise ValueError(f"unknown pose network preset {name!r}: paper or cpu")


@struct.dataclass
class Pose:
    pos: jax.Array  # [..., 3] metres, world frame
    quat: jax.Array  # [..., 4] unit quaternion (w, x, y, z), world frame


def spatial_softmax(features: jax.Array, temperature: jax.Array) -> jax.Array:
    """Expected image coordinates of each channel's softmax over positions.

    features [B, H, W, C] -> [B, 2 C]: per channel (x, y), with x along the width and y
    along the height, both in [-1, 1] (pixel centres at -1 and 1 at the edges' pixels).
    Channels are ordered (x_0, y_0, x_1, y_1, ...).
    """
    b, h, w, c = features.shape
    logits = features.reshape(b, h * w, c) / temperature
    weights = jax.nn.softmax(logits, axis=1).reshape(b, h, w, c)
    xs = jnp.linspace(-1.0, 1.0, w) if w > 1 else jnp.zeros(1)
    ys = jnp.linspace(-1.0, 1.0, h) if h > 1 else jnp.zeros(1)
    ex = jnp.einsum("bhwc,w->bc", weights, xs)
    ey = jnp.einsum("bhwc,h->bc", weights, ys)
    return jnp.stack([ex, ey], axis=-1).reshape(b, 2 * c)


class SpatialSoftmax(nn.Module):
    """Spatial softmax with a learned temperature (one per layer, starting at 1)."""

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        log_t = self.param("log_temperature", nn.initializers.zeros, ())
        return spatial_softmax(features, jnp.exp(log_t))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projected) shortcut."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = (self.stride, self.stride)
        y = nn.relu(nn.Conv(self.features, (3, 3), strides=s)(x))
        y = nn.Conv(self.features, (3, 3))(y)
        if x.shape[-1] != self.features or self.stride != 1:
            x = nn.Conv(self.features, (1, 1), strides=s)(x)
        return nn.relu(x + y)


class Tower(nn.Module):
    """One camera's image [B, H, W, 3] (floats) -> keypoint features [B, 2 * last filters]."""

    config: PoseNetConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        st = (cfg.stem_stride, cfg.stem_stride)
        x = nn.relu(nn.Conv(cfg.stem[0], (5, 5), strides=st)(x))
        x = nn.relu(nn.Conv(cfg.stem[1], (3, 3))(x))
        x = nn.max_pool(x, (cfg.pool, cfg.pool), strides=(cfg.pool, cfg.pool), padding="SAME")
        for i, (blocks, filters) in enumerate(cfg.stages):
            for j in range(blocks):
                stride = cfg.stage_stride if (i > 0 and j == 0) else 1
                x = ResBlock(filters, stride)(x)
        return SpatialSoftmax()(x)


def image_input(images: jax.Array) -> jax.Array:
    """uint8 [..., H, W, 3] -> float32 in [-0.5, 0.5]."""
    return images.astype(jnp.float32) / 255.0 - 0.5


class PoseNet(nn.Module):
    """uint8 images [B, cameras, H, W, 3] -> raw outputs [B, 7]: normalized position (3)
    and an unnormalized quaternion (4). `decode` turns them into a `Pose`."""

    config: PoseNetConfig

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        if images.ndim != 5 or images.shape[-1] != 3:
            raise ValueError(f"images must be [B, cameras, H, W, 3], not {images.shape}")
        b, cams = images.shape[:2]
        x = image_input(images).reshape(b * cams, *images.shape[2:])
        features = Tower(self.config)(x)  # one module: weights shared by the cameras
        features = features.reshape(b, cams * features.shape[-1])
        h = nn.relu(nn.Dense(self.config.hidden)(features))
        return nn.Dense(7)(h)


def decode(config: PoseNetConfig, raw: jax.Array) -> Pose:
    """Raw outputs [..., 7] -> position in metres and a unit quaternion."""
    mean = jnp.asarray(config.pos_mean, raw.dtype)
    std = jnp.asarray(config.pos_std, raw.dtype)
    q = raw[..., 3:]
    # The epsilon only matters for an all-zero output, where any direction is as good.
    q = q / jnp.sqrt(jnp.sum(q * q, axis=-1, keepdims=True) + 1e-12)
    return Pose(pos=mean + std * raw[..., :3], quat=q)


@struct.dataclass
class LossTerms:
    total: jax.Array
    position: jax.Array  # mean squared error of normalized positions
    rotation: jax.Array  # mean of 2 - 2 |<q_pred, q>| (sign-free)


def loss(config: PoseNetConfig, raw: jax.Array, pos: jax.Array, q: jax.Array) -> LossTerms:
    """MSE on normalized targets. raw [B, 7]; pos [B, 3] metres; q [B, 4] unit quaternions."""
    pred = decode(config, raw)
    std = jnp.asarray(config.pos_std, raw.dtype)
    position = jnp.mean(jnp.square((pred.pos - pos) / std))
    rotation = jnp.mean(rotation_loss(pred.quat, q))
    return LossTerms(total=position + rotation, position=position, rotation=rotation)


def rotation_loss(q_pred: jax.Array, q: jax.Array) -> jax.Array:
    """min(|q_pred - q|^2, |q_pred + q|^2) for unit quaternions: 2 - 2 |<q_pred, q>|."""
    return 2.0 - 2.0 * jnp.abs(jnp.sum(q_pred * q, axis=-1))


def position_error_mm(pred: jax.Array, true: jax.Array) -> jax.Array:
    """Euclidean distance [...] in millimetres between positions [..., 3] in metres."""
    return 1000.0 * jnp.linalg.norm(pred - true, axis=-1)


def rotation_error_deg(pred: jax.Array, true: jax.Array) -> jax.Array:
    """Angle [...] in degrees of the rotation between orientations [..., 4]."""
    return jnp.degrees(quat.angle_between(quat.normalize(pred), quat.normalize(true)))


def init_params(config: PoseNetConfig, key: jax.Array, image_shape: Sequence[int]):
    """Parameters for images of shape [cameras, H, W, 3]."""
    dummy = jnp.zeros((1, *image_shape), jnp.uint8)
    return PoseNet(config).init(key, dummy)["params"]


def predict(config: PoseNetConfig, params, images: jax.Array) -> Pose:
    """The pose of each of a batch of image triples [B, cameras, H, W, 3] (uint8)."""
    return decode(config, PoseNet(config).apply({"params": params}, images))
