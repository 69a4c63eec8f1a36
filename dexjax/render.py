"""Offscreen video of the hand through MJX's batch renderer (MuJoCo Warp, no OpenGL).

Physics stays on MJX's JAX implementation; only drawing goes through MuJoCo Warp. Each
frame is a `qpos` (and the goal marker's mocap orientation): the renderer runs Warp's
kinematics from it and ray-traces the scene's cameras, with the frames of a sequence as the
batch of worlds. The cameras and lights must be fixed in the world (they are in dexjax's
scene), so their poses are computed once on the host.
"""

import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from dexjax import constants as c

CONTROL_FPS = 12.5
"""Real-time frame rate of one frame per 80 ms control step."""


def check_static_views(mj_model: mujoco.MjModel, cameras: Sequence[str]) -> list[int]:
    ids = []
    for name in cameras:
        cam = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        if cam < 0:
            raise ValueError(f"the model has no camera {name!r}")
        ids.append(cam)
    fixed = mujoco.mjtCamLight.mjCAMLIGHT_FIXED
    moving = [i for i in ids if mj_model.cam_bodyid[i] != 0 or mj_model.cam_mode[i] != fixed]
    moving_lights = (mj_model.light_bodyid != 0) | (mj_model.light_mode != fixed)
    if moving or moving_lights.any():
        raise ValueError("the renderer needs cameras and lights fixed to the world body")
    return ids


class Renderer:
    """Draws frames of one MjModel from some of its cameras at a fixed resolution.

    Args:
      mj_model: the scene (e.g. `HandEnv.mj_model`).
      cameras: camera names, drawn side by side in this order by `tile`.
      width, height: pixels of each camera image.
      batch: frames drawn per call of the renderer (its number of Warp worlds).
    """

    def __init__(
        self,
        mj_model: mujoco.MjModel,
        cameras: Sequence[str] = c.CAMERAS,
        width: int = 160,
        height: int = 160,
        batch: int = 16,
    ):
        if width < 1 or height < 1 or batch < 1:
            raise ValueError("width, height and batch must be positive")
        if not cameras:
            raise ValueError("give at least one camera")
        check_static_views(mj_model, cameras)
        self.mj_model = mj_model
        self.cameras = tuple(cameras)
        self.batch = batch
        host = mujoco.MjData(mj_model)
        mujoco.mj_forward(mj_model, host)  # camera and light poses, fixed in the world
        self._mocap_quat = host.mocap_quat.astype(np.float32)
        self._model = mjx.put_model(mj_model, impl="warp")
        self._data = warp_data(mj_model, host)
        self._context = mjx.create_render_context(
            mj_model,
            nworld=batch,
            cam_res=(width, height),
            render_rgb=True,
            render_depth=False,
            cam_active=list(self.cameras),
        )
        self._draw = jax.jit(self._draw_batch)

    def _draw_batch(self, qpos: jax.Array, mocap_quat: jax.Array, context) -> jax.Array:
        model = self._model
        data = jax.vmap(lambda q, mq: self._data.replace(qpos=q, mocap_quat=mq))(qpos, mocap_quat)
        data = jax.vmap(mjx.kinematics, in_axes=(None, 0))(model, data)
        return to_uint8(draw(model, data, context, len(self.cameras)))

    def render(self, qpos: np.ndarray, mocap_quat: np.ndarray | None = None) -> np.ndarray:
        """Images of a sequence of poses.

        Args:
          qpos: [T, nq] joint positions.
          mocap_quat: [T, nmocap, 4] mocap orientations (default: the model's).

        Returns:
          uint8 RGB images, [T, cameras, height, width, 3].
        """
        m = self.mj_model
        qpos = np.asarray(qpos, np.float32)
        if qpos.ndim != 2 or qpos.shape[1] != m.nq or len(qpos) == 0:
            raise ValueError(f"qpos must be [T > 0, {m.nq}], got {qpos.shape}")
        if mocap_quat is None:
            mocap_quat = np.broadcast_to(self._mocap_quat, (len(qpos), m.nmocap, 4))
        mocap_quat = np.asarray(mocap_quat, np.float32)
        if mocap_quat.shape != (len(qpos), m.nmocap, 4):
            raise ValueError(
                f"mocap_quat must be [{len(qpos)}, {m.nmocap}, 4], got {mocap_quat.shape}"
            )
        context = self._context.pytree()
        chunks = []
        for begin in range(0, len(qpos), self.batch):
            q, mq = qpos[begin : begin + self.batch], mocap_quat[begin : begin + self.batch]
            pad = self.batch - len(q)  # the renderer draws exactly `batch` worlds
            if pad:
                q = np.concatenate([q, np.repeat(q[-1:], pad, 0)])
                mq = np.concatenate([mq, np.repeat(mq[-1:], pad, 0)])
            images = np.asarray(self._draw(q, mq, context))
            chunks.append(images[: self.batch - pad])
        return np.concatenate(chunks)


def warp_data(m: mujoco.MjModel, host: mujoco.MjData) -> mjx.Data:
    """mjx.put_data(impl="warp") with its one uninitialized field zeroed.

    MuJoCo Warp's put_data allocates `contact.geomcollisionid` with `wp.empty` and never
    sets it (mujoco_warp/_src/io.py, "TODO(team): set values"), so it holds whatever was in
    memory. Rendering never reads it, but a program that holds this data as a constant
    would then differ from process to process and miss JAX's persistent compilation cache
    (Renderer's jitted draw closes over its data).
    """
    data = mjx.put_data(m, host, impl="warp")
    impl = data._impl
    return data.replace(
        _impl=impl.replace(contact__geomcollisionid=jnp.zeros_like(impl.contact__geomcollisionid))
    )


def draw(model: mjx.Model, data: mjx.Data, context, num_cameras: int) -> jax.Array:
    """RGB in [0, 1], [..., cameras, H, W, 3], of Warp data whose kinematics are computed.

    `data` is batched like the render context (leading axis, or under vmap) and its camera
    and light poses are set; `context` is a render context's pytree.
    """
    data = mjx.refit_bvh(model, data, context)
    packed, _, _ = mjx.render(model, data, context)
    return jnp.stack([mjx.get_rgb(context, i, packed) for i in range(num_cameras)], axis=-4)


def to_uint8(rgb: jax.Array) -> jax.Array:
    """Intensities in [0, 1] (clipped) -> uint8."""
    return jnp.round(jnp.clip(rgb, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def tile(images: np.ndarray) -> np.ndarray:
    """[T, cameras, H, W, 3] -> [T, H, cameras * W, 3]: the cameras side by side."""
    t, n, h, w, ch = images.shape
    return images.transpose(0, 2, 1, 3, 4).reshape(t, h, n * w, ch)


def write_gif(
    frames: np.ndarray,
    path: str | pathlib.Path,
    fps: float = CONTROL_FPS,
    captions: Sequence[str] | None = None,
) -> pathlib.Path:
    """Write [T, H, W, 3] uint8 frames as a looping GIF, optionally captioned top left."""
    from PIL import Image, ImageDraw

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(
            f"frames must be uint8 [T > 0, H, W, 3], got {frames.dtype} {frames.shape}"
        )
    if captions is not None and len(captions) != len(frames):
        raise ValueError(f"{len(captions)} captions for {len(frames)} frames")
    if fps <= 0:
        raise ValueError("fps must be positive")
    images = []
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame)
        if captions is not None:
            ImageDraw.Draw(image).text((3, 2), captions[i], fill=(255, 255, 255))
        images.append(image)
    # One palette for the whole clip, without dithering: unchanged pixels stay identical
    # between frames, which keeps the GIF small.
    samples = images[:: max(1, len(images) // 16)]
    montage = Image.new("RGB", (samples[0].width, samples[0].height * len(samples)))
    for i, image in enumerate(samples):
        montage.paste(image, (0, i * image.height))
    palette = montage.quantize(colors=256)
    images = [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in images]
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=int(round(1000.0 / fps)),
        loop=0,
    )
    return path
