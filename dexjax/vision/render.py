"""The three vision cameras rendered through MJX (MuJoCo Warp), with visual randomization.

Images are drawn from physics states (`qpos`, and the goal's mocap orientation) by a
RENDER-ONLY variant of the scene: the same bodies and joints (same `nq`, so a physics
`qpos` renders directly), plus what only the cameras need:
- six thin coloured plates inside the block, one per face, so that its orientation can be
  read from an image (the cube texture's letters are too small at 64x64); the block's own
  geom and the goal marker are hidden (the paper's renders show no goal);
- a bank of textured materials for the hand and the floor (checker, noise, gradient, plain);
- six spot lights, of which 4-6 are switched on per image.

Randomization (paper, Table 9) is sampled per image from an explicit key by
`sample_visuals`, as per-world values of model fields (`geom_rgba`, `geom_matid`,
`cam_fovy`, `light_*`) and of the camera and light poses in the data, which the Warp
renderer reads per world; contrast and per-pixel noise are applied to the rendered pixels.

The whole path from (key, qpos) to uint8 pixels is the pure function `render_images`; its
render context is an explicit argument (a `RenderContextPytree`, whose only content is a
static handle), so it can be called inside any jitted function, e.g. a training chunk:

    renderer = VisionRenderer(mj_model, VisionConfig.cpu(), batch=64)
    def chunk(..., scene, context):
        images = render_images(scene, context, config, key, qpos, mocap_quat)
    jax.jit(chunk)(..., renderer.scene, renderer.context)

The batch of `qpos` given to `render_images` must equal the `batch` the context was made
for (Warp allocates its buffers for exactly that many worlds).
"""

import colorsys
import dataclasses
import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from mujoco import mjx
from mujoco.mjx.warp import render_context

from dexjax import constants as c
from dexjax import render as video
from dexjax import scene as scene_lib

SCENE_TARGET = (1.0, 0.90, 0.17)
"""The point the cameras look at (world frame, m): the block above the palm."""

NUM_LIGHTS = 6
"""Spot lights in the render variant; `VisionConfig.lights` chooses how many are on."""

FACE_HUES = (0.0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6)
"""Hues of the block's six face plates (+x, -x, +y, -y, +z, -z): red, yellow, green, cyan,
blue, magenta; 60 degrees apart, so a +-1% hue jitter keeps them distinct."""

FACE_SATURATION = 0.75
FACE_VALUE = 0.8

HIDDEN_GROUP = 5
"""Geom group of what the cameras must not see (outside the renderer's groups 0-2)."""

_PLATE_HALF_THICKNESS = 0.002
_HAND_TEXTURES = ("plain", "checker", "noise", "gradient")
_FLOOR_TEXTURES = ("plain", "checker", "noise", "gradient")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """Camera images and their visual randomization (paper, Table 9)."""

    width: int = 64
    """Pixels of each camera image, horizontally."""
    height: int = 64
    """Pixels of each camera image, vertically."""
    randomize: bool = True
    """Sample the randomizations below per image; if False every image uses the nominal
    scene (model colours, nominal lights and cameras) and no pixel noise."""
    camera_position: float = 0.0015
    """Camera position jitter, uniform per axis in [-x, x] (m)."""
    camera_rotation_deg: float = 3.0
    """Camera rotation jitter: a uniform angle in [0, x] degrees about a random axis."""
    camera_fovy_deg: float = 1.0
    """Vertical field-of-view jitter, uniform in [-x, x] degrees."""
    object_hue: float = 0.01
    """Hue jitter of the block's faces, uniform in [-x, x] (fraction of the colour circle)."""
    object_saturation: float = 0.15
    """Saturation scale jitter of the block's faces, uniform factor in [1 - x, 1 + x]."""
    object_value: float = 0.15
    """Value (brightness) scale jitter of the block's faces, uniform factor in [1 - x, 1 + x]."""
    hand_color: tuple[float, float] = (0.1, 0.95)
    """Each RGB channel of the hand's colour is uniform in this range (one per image)."""
    hand_color_jitter: float = 0.05
    """Per-geom jitter of the hand's colour, uniform per channel in [-x, x]."""
    background_color: tuple[float, float] = (0.05, 0.95)
    """Each RGB channel of the floor's colour is uniform in this range."""
    textures: bool = True
    """Choose the hand's and the floor's texture per image from the bank (else plain)."""
    lights: tuple[int, int] = (4, 6)
    """Number of lights switched on, uniform over [low, high] (at most NUM_LIGHTS)."""
    light_distance: tuple[float, float] = (0.6, 1.5)
    """Distance of each light from the scene target (m), uniform."""
    light_elevation_deg: tuple[float, float] = (20.0, 90.0)
    """Elevation of each light above the horizontal through the target (degrees)."""
    light_intensity: tuple[float, float] = (1.2, 2.4)
    """Summed diffuse intensity of the lights that are on, uniform; split among them."""
    light_tint: float = 0.3
    """Each RGB channel of a light's colour is scaled by a factor uniform in [1 - x, 1]."""
    contrast: tuple[float, float] = (0.5, 1.5)
    """Contrast factor per image, uniform: pixels move away from mid-grey by this factor."""
    pixel_noise: float = 0.1
    """Per-pixel, per-channel additive noise, uniform in [-x, x] (intensity in [0, 1])."""

    def __post_init__(self):
        if self.width < 1 or self.height < 1:
            raise ValueError(f"width and height must be positive, got {self.width}x{self.height}")
        low, high = self.lights
        if not 1 <= low <= high <= NUM_LIGHTS:
            raise ValueError(f"lights must satisfy 1 <= low <= high <= {NUM_LIGHTS}")
        for name in ("hand_color", "background_color", "light_distance", "contrast"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} must be (low, high) with low <= high")
        if min(self.camera_position, self.camera_rotation_deg, self.camera_fovy_deg) < 0:
            raise ValueError("camera jitters must be non-negative")

    @classmethod
    def paper(cls, **overrides) -> "VisionConfig":
        """The paper's 200x200 images."""
        return cls(width=200, height=200, **overrides)

    @classmethod
    def cpu(cls, **overrides) -> "VisionConfig":
        """64x64 images, affordable on a CPU."""
        return cls(width=64, height=64, **overrides)


@struct.dataclass
class Visuals:
    """What differs between the images of one batch (one row per image, or world)."""

    geom_rgba: jax.Array  # [ngeom, 4]
    geom_matid: jax.Array  # [ngeom]
    cam_fovy: jax.Array  # [ncam]
    cam_xpos: jax.Array  # [ncam, 3]
    cam_xmat: jax.Array  # [ncam, 3, 3]
    light_active: jax.Array  # [nlight] bool
    light_diffuse: jax.Array  # [nlight, 3]
    light_xpos: jax.Array  # [nlight, 3]
    light_xdir: jax.Array  # [nlight, 3]
    contrast: jax.Array  # [ncam]
    key_noise: jax.Array  # typed key of the per-pixel noise


@struct.dataclass
class RenderScene:
    """The render variant as Warp model and data, with the tables randomization needs."""

    model: mjx.Model
    data: mjx.Data
    nominal: Visuals
    hand_geoms: jax.Array  # [nhand] geom ids
    face_geoms: jax.Array  # [nface] geom ids of the block's face plates (or the object)
    face_hsv: jax.Array  # [nface, 3] their nominal colour
    floor_geom: jax.Array  # [] geom id
    hand_materials: jax.Array  # [ntex] material ids, first is plain
    floor_materials: jax.Array  # [ntex]
    camera_ids: tuple[int, ...] = struct.field(pytree_node=False)


# ---- the render-only scene ---------------------------------------------------------------


def scene_config_of(mj_model: mujoco.MjModel) -> scene_lib.SceneConfig:
    """The object settings of a dexjax scene, read back from its compiled model."""
    name = mj_model.names.split(b"\0", 1)[0].decode()  # the model name comes first
    obj = name.removeprefix("dexjax_shadow_")
    if obj not in scene_lib.OBJECTS:
        raise ValueError(f"not a dexjax hand scene (model name {name!r})")
    geom = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_GEOM, c.OBJECT_GEOM)
    if obj == "block":
        half = float(mj_model.geom_size[geom, 0])
    else:
        mesh = mj_model.geom_dataid[geom]
        adr, num = mj_model.mesh_vertadr[mesh], mj_model.mesh_vertnum[mesh]
        half = float(np.abs(mj_model.mesh_vert[adr : adr + num, 2]).max())
    return scene_lib.SceneConfig(object=obj, object_half_size=half)


def _add_texture_bank(spec: mujoco.MjSpec, prefix: str, kind, repeat: tuple[float, float]):
    builtin = {
        "checker": (mujoco.mjtBuiltin.mjBUILTIN_CHECKER, {}),
        "noise": (mujoco.mjtBuiltin.mjBUILTIN_FLAT, {"mark": mujoco.mjtMark.mjMARK_RANDOM}),
        "gradient": (mujoco.mjtBuiltin.mjBUILTIN_GRADIENT, {}),
    }
    for name in _HAND_TEXTURES if prefix == "hand" else _FLOOR_TEXTURES:
        material = spec.add_material(name=f"vision:{prefix}_{name}", texrepeat=repeat)
        if name == "plain":
            continue
        kind_builtin, extra = builtin[name]
        spec.add_texture(
            name=f"vision:{prefix}_{name}",
            type=kind,
            builtin=kind_builtin,
            width=64,
            height=64,
            rgb1=(1.0, 1.0, 1.0),
            rgb2=(0.55, 0.55, 0.55),
            markrgb=(0.35, 0.35, 0.35),
            random=0.15,
            **extra,
        )
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = f"vision:{prefix}_{name}"


def render_spec(config: scene_lib.SceneConfig) -> mujoco.MjSpec:
    """The render-only variant of the scene (same joints and mocap bodies as physics)."""
    spec = scene_lib.build_spec(config)
    spec.modelname = f"dexjax_vision_{config.object}"
    for geom in spec.body(c.GOAL_BODY).geoms:
        geom.group = HIDDEN_GROUP
    if config.object == "block":
        spec.geom(c.OBJECT_GEOM).group = HIDDEN_GROUP
        h, t = config.object_half_size, _PLATE_HALF_THICKNESS
        body = spec.body(c.OBJECT_BODY)
        for i, hue in enumerate(FACE_HUES):
            axis, sign = divmod(i, 2)
            pos, size = [0.0, 0.0, 0.0], [h, h, h]
            pos[axis] = (h - t) * (1 - 2 * sign)
            size[axis] = t
            rgb = colorsys.hsv_to_rgb(hue, FACE_SATURATION, FACE_VALUE)
            body.add_geom(
                name=f"vision:face{i}",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                pos=pos,
                size=size,
                rgba=(*rgb, 1.0),
                contype=0,
                conaffinity=0,
                mass=0.0,
                density=0.0,
                group=0,
            )
    for light in list(spec.lights):
        spec.delete(light)
    for i in range(NUM_LIGHTS):
        spec.worldbody.add_light(
            name=f"vision:light{i}",
            pos=(1.0, 0.9, 1.2),
            dir=(0.0, 0.0, -1.0),
            cutoff=70.0,
            exponent=1.0,
            diffuse=(0.4, 0.4, 0.4),
            specular=(0.15, 0.15, 0.15),
            ambient=(0.03, 0.03, 0.03),
            active=i < 4,
            castshadow=False,  # the MJX renderer draws no shadows either
        )
    _add_texture_bank(spec, "hand", mujoco.mjtTexture.mjTEXTURE_CUBE, (1.0, 1.0))
    _add_texture_bank(spec, "floor", mujoco.mjtTexture.mjTEXTURE_2D, (6.0, 6.0))
    spec.geom(c.FLOOR_GEOM).material = "vision:floor_plain"
    spec.geom(c.FLOOR_GEOM).rgba = (0.45, 0.45, 0.48, 1.0)
    for geom in spec.geoms:
        if geom.group == 1 and geom.name.startswith(c.PREFIX):
            geom.material = "vision:hand_plain"
            geom.rgba = (0.85, 0.82, 0.78, 1.0)
    return spec


def _place_nominal_lights(mj_model: mujoco.MjModel) -> None:
    """Spread the lights evenly around and above the target (the nominal setup)."""
    target = np.array(SCENE_TARGET)
    for i in range(mj_model.nlight):
        azimuth = 2 * np.pi * i / mj_model.nlight
        pos = target + 1.0 * np.array([np.cos(azimuth) * 0.6, np.sin(azimuth) * 0.6, 0.8])
        mj_model.light_pos[i] = pos
        mj_model.light_dir[i] = (target - pos) / np.linalg.norm(target - pos)


def build_render_model(mj_model: mujoco.MjModel) -> mujoco.MjModel:
    """Compile the render variant of a dexjax physics model and check it renders its qpos."""
    variant = render_spec(scene_config_of(mj_model)).compile()
    _place_nominal_lights(variant)
    if variant.nq != mj_model.nq or variant.nmocap != mj_model.nmocap:
        raise ValueError(
            f"render variant has nq={variant.nq}, nmocap={variant.nmocap}; the physics "
            f"model has nq={mj_model.nq}, nmocap={mj_model.nmocap}"
        )
    return variant


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
    """[..., 3] hue (fraction of the circle, any real), saturation, value -> RGB in [0, 1]."""
    h, s, v = hsv[..., 0] % 1.0, hsv[..., 1], hsv[..., 2]
    # The standard hexcone formula, per channel n = 5, 3, 1 for R, G, B.
    n = jnp.array([5.0, 3.0, 1.0])
    k = (n + 6.0 * h[..., None]) % 6.0
    ramp = jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
    return v[..., None] - v[..., None] * s[..., None] * ramp


def make_scene(render_model: mujoco.MjModel, cameras=c.CAMERAS) -> RenderScene:
    """Warp model and data of the render variant, its nominal visuals and index tables."""
    m = render_model
    camera_ids = tuple(video.check_static_views(m, cameras))
    host = mujoco.MjData(m)
    mujoco.mj_forward(m, host)  # camera and light poses, fixed in the world

    def geom_ids(predicate):
        return np.array([i for i in range(m.ngeom) if predicate(m.geom(i).name, i)], np.int32)

    hand = geom_ids(lambda name, i: m.geom_group[i] == 1 and name.startswith(c.PREFIX))
    faces = geom_ids(lambda name, i: name.startswith("vision:face"))
    if len(faces):
        face_hsv = np.array([(h, FACE_SATURATION, FACE_VALUE) for h in FACE_HUES], np.float32)
    else:  # the octagon: its own geom, jittered about its colour
        faces = geom_ids(lambda name, i: name == c.OBJECT_GEOM)
        face_hsv = np.array([colorsys.rgb_to_hsv(*m.geom_rgba[faces[0], :3])], np.float32)

    def material_ids(prefix, names):
        return np.array(
            [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, f"{prefix}{n}") for n in names],
            np.int32,
        )

    ncam = len(camera_ids)
    nominal = Visuals(
        geom_rgba=jnp.asarray(m.geom_rgba),
        geom_matid=jnp.asarray(m.geom_matid),
        cam_fovy=jnp.asarray(m.cam_fovy, jnp.float32),
        cam_xpos=jnp.asarray(host.cam_xpos, jnp.float32),
        cam_xmat=jnp.asarray(host.cam_xmat.reshape(-1, 3, 3), jnp.float32),
        light_active=jnp.asarray(m.light_active, bool),
        light_diffuse=jnp.asarray(m.light_diffuse),
        light_xpos=jnp.asarray(host.light_xpos, jnp.float32),
        light_xdir=jnp.asarray(host.light_xdir, jnp.float32),
        contrast=jnp.ones(ncam),
        key_noise=jax.random.key(0),
    )
    return RenderScene(
        model=mjx.put_model(m, impl="warp"),
        data=video.warp_data(m, host),
        nominal=nominal,
        hand_geoms=jnp.asarray(hand),
        face_geoms=jnp.asarray(faces),
        face_hsv=jnp.asarray(face_hsv),
        floor_geom=jnp.asarray(mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, c.FLOOR_GEOM)),
        hand_materials=jnp.asarray(material_ids("vision:hand_", _HAND_TEXTURES)),
        floor_materials=jnp.asarray(material_ids("vision:floor_", _FLOOR_TEXTURES)),
        camera_ids=camera_ids,
    )


# ---- sampling the randomization ----------------------------------------------------------


def _uniform(key: jax.Array, shape: tuple[int, ...], bounds: tuple[float, float]) -> jax.Array:
    return jax.random.uniform(key, shape, minval=bounds[0], maxval=bounds[1])


def _random_rotation(key: jax.Array, max_angle: float) -> jax.Array:
    """A rotation matrix by a uniform angle in [0, max_angle] about a uniform axis."""
    key_axis, key_angle = jax.random.split(key)
    axis = jax.random.normal(key_axis, (3,))
    axis = axis / jnp.linalg.norm(axis)
    angle = jax.random.uniform(key_angle, (), minval=0.0, maxval=max_angle)
    cross = jnp.array(
        [[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]]
    )
    # Rodrigues' formula.
    return jnp.eye(3) + jnp.sin(angle) * cross + (1.0 - jnp.cos(angle)) * cross @ cross


def _sample_cameras(key: jax.Array, nominal: Visuals, ids, config: VisionConfig):
    key_pos, key_rot, key_fovy = jax.random.split(key, 3)
    ncam = nominal.cam_xpos.shape[0]
    shift = jax.random.uniform(
        key_pos, (ncam, 3), minval=-config.camera_position, maxval=config.camera_position
    )
    turns = jax.vmap(_random_rotation, in_axes=(0, None))(
        jax.random.split(key_rot, ncam), jnp.deg2rad(config.camera_rotation_deg)
    )
    fovy = nominal.cam_fovy + jax.random.uniform(
        key_fovy, (ncam,), minval=-config.camera_fovy_deg, maxval=config.camera_fovy_deg
    )
    # Only the rendered cameras are jittered; a rotation in the world frame turns the view.
    rendered = jnp.zeros(ncam, bool).at[jnp.array(ids)].set(True)
    xpos = jnp.where(rendered[:, None], nominal.cam_xpos + shift, nominal.cam_xpos)
    xmat = jnp.where(rendered[:, None, None], turns @ nominal.cam_xmat, nominal.cam_xmat)
    return xpos, xmat, jnp.where(rendered, fovy, nominal.cam_fovy)


def _sample_lights(key: jax.Array, config: VisionConfig):
    key_count, key_dist, key_elev, key_azim, key_power, key_tint = jax.random.split(key, 6)
    n = NUM_LIGHTS
    low, high = config.lights
    count = jax.random.randint(key_count, (), low, high + 1)
    active = jnp.arange(n) < count
    distance = _uniform(key_dist, (n,), config.light_distance)
    elevation = jnp.deg2rad(_uniform(key_elev, (n,), config.light_elevation_deg))
    azimuth = jax.random.uniform(key_azim, (n,), minval=0.0, maxval=2 * jnp.pi)
    offset = distance[:, None] * jnp.stack(
        [
            jnp.cos(elevation) * jnp.cos(azimuth),
            jnp.cos(elevation) * jnp.sin(azimuth),
            jnp.sin(elevation),
        ],
        axis=1,
    )
    xpos = jnp.array(SCENE_TARGET) + offset
    xdir = -offset / distance[:, None]
    total = _uniform(key_power, (), config.light_intensity)
    tint = jax.random.uniform(key_tint, (n, 3), minval=1.0 - config.light_tint, maxval=1.0)
    diffuse = tint * total / count
    return active, diffuse, xpos, xdir


def _sample_colors(key: jax.Array, scene: RenderScene, config: VisionConfig):
    key_hand, key_jitter, key_floor, key_face, key_hand_tex, key_floor_tex = jax.random.split(
        key, 6
    )
    rgba = scene.nominal.geom_rgba
    hand = _uniform(key_hand, (3,), config.hand_color)
    jitter = jax.random.uniform(
        key_jitter,
        (scene.hand_geoms.shape[0], 3),
        minval=-config.hand_color_jitter,
        maxval=config.hand_color_jitter,
    )
    rgba = rgba.at[scene.hand_geoms, :3].set(jnp.clip(hand + jitter, 0.0, 1.0))
    floor = _uniform(key_floor, (3,), config.background_color)
    rgba = rgba.at[scene.floor_geom, :3].set(floor)
    nface = scene.face_geoms.shape[0]
    low = jnp.array([-config.object_hue, 1 - config.object_saturation, 1 - config.object_value])
    high = jnp.array([config.object_hue, 1 + config.object_saturation, 1 + config.object_value])
    u = jax.random.uniform(key_face, (nface, 3), minval=low, maxval=high)
    hue = scene.face_hsv[:, :1] + u[:, :1]  # hsv_to_rgb wraps hues around the circle
    saturation_value = jnp.clip(scene.face_hsv[:, 1:] * u[:, 1:], 0.0, 1.0)
    faces = hsv_to_rgb(jnp.concatenate([hue, saturation_value], axis=1))
    rgba = rgba.at[scene.face_geoms, :3].set(faces)
    matid = scene.nominal.geom_matid
    if config.textures:
        hand_tex = jax.random.choice(key_hand_tex, scene.hand_materials)
        floor_tex = jax.random.choice(key_floor_tex, scene.floor_materials)
        matid = matid.at[scene.hand_geoms].set(hand_tex).at[scene.floor_geom].set(floor_tex)
    return rgba, matid


def sample_visuals(key: jax.Array, scene: RenderScene, config: VisionConfig) -> Visuals:
    """The randomized look of one image (one world), a pure function of `key`."""
    key_cam, key_light, key_color, key_contrast, key_noise = jax.random.split(key, 5)
    cameras = _sample_cameras(key_cam, scene.nominal, scene.camera_ids, config)
    cam_xpos, cam_xmat, cam_fovy = cameras
    light_active, light_diffuse, light_xpos, light_xdir = _sample_lights(key_light, config)
    geom_rgba, geom_matid = _sample_colors(key_color, scene, config)
    contrast = _uniform(key_contrast, (len(scene.camera_ids),), config.contrast)
    return Visuals(
        geom_rgba=geom_rgba,
        geom_matid=geom_matid,
        cam_fovy=cam_fovy,
        cam_xpos=cam_xpos,
        cam_xmat=cam_xmat,
        light_active=light_active,
        light_diffuse=light_diffuse,
        light_xpos=light_xpos,
        light_xdir=light_xdir,
        contrast=contrast,
        key_noise=key_noise,
    )


# ---- drawing -------------------------------------------------------------------------------


def _world(scene: RenderScene, visuals: Visuals, qpos: jax.Array, mocap_quat: jax.Array):
    """Model and data of one world: its visuals in the model fields, its pose in the data."""
    model = scene.model.replace(
        geom_rgba=visuals.geom_rgba,
        geom_matid=visuals.geom_matid,
        cam_fovy=visuals.cam_fovy,
        light_active=visuals.light_active,
        light_diffuse=visuals.light_diffuse,
    )
    data = scene.data.replace(qpos=qpos, mocap_quat=mocap_quat)
    data = mjx.kinematics(model, data)
    # Cameras and lights are fixed in the world: their (jittered) poses are set directly.
    data = data.replace(cam_xpos=visuals.cam_xpos, cam_xmat=visuals.cam_xmat)
    impl = data._impl.replace(light_xpos=visuals.light_xpos, light_xdir=visuals.light_xdir)
    return model, data.replace(_impl=impl)


def _draw_world(scene, context, visuals, qpos, mocap_quat):
    model, data = _world(scene, visuals, qpos, mocap_quat)
    return video.draw(model, data, context, len(scene.camera_ids))


def _postprocess(rgb: jax.Array, visuals: Visuals, config: VisionConfig) -> jax.Array:
    """Contrast about mid-grey, then per-pixel noise: [ncam, H, W, 3] in [0, 1].

    The pivot is a fixed grey rather than the image's mean so that a pixel depends only on
    what it shows (a moving object does not change the rest of the image)."""
    if config.randomize:
        rgb = 0.5 + visuals.contrast[:, None, None, None] * (rgb - 0.5)
        rgb = rgb + jax.random.uniform(
            visuals.key_noise, rgb.shape, minval=-config.pixel_noise, maxval=config.pixel_noise
        )
    return video.to_uint8(rgb)


def render_images(
    scene: RenderScene,
    context,
    config: VisionConfig,
    key: jax.Array,
    qpos: jax.Array,
    mocap_quat: jax.Array,
) -> jax.Array:
    """Pure, jittable: randomized camera images of a batch of states.

    Args:
      scene: `VisionRenderer.scene` (the render variant's Warp model, data and tables).
      context: `VisionRenderer.context`, made for exactly B worlds.
      config: static (hashable) rendering and randomization settings.
      key: one typed key; image b uses `jax.random.split(key, B)[b]`.
      qpos: [B, nq] physics joint positions.
      mocap_quat: [B, nmocap, 4] mocap orientations (the goal marker; it is hidden).

    Returns:
      uint8 RGB, [B, cameras, height, width, 3].
    """
    batch = qpos.shape[0]
    worlds = render_context.get(context).nworld
    if qpos.shape[0] != worlds or mocap_quat.shape[0] != worlds:
        raise ValueError(
            f"the render context draws exactly {worlds} worlds; got qpos {qpos.shape} and "
            f"mocap_quat {mocap_quat.shape}"
        )
    if config.randomize:
        visuals = jax.vmap(sample_visuals, in_axes=(0, None, None))(
            jax.random.split(key, batch), scene, config
        )
    else:
        visuals = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch, *x.shape)), scene.nominal)
    rgb = jax.vmap(_draw_world, in_axes=(None, None, 0, 0, 0))(
        scene, context, visuals, qpos, mocap_quat
    )
    return jax.vmap(_postprocess, in_axes=(0, 0, None))(rgb, visuals, config)


class VisionRenderer:
    """Randomized images of the three cameras for batches of exactly `batch` states.

    Args:
      mj_model: the physics model of a dexjax scene (e.g. `HandEnv.mj_model`); its render
        variant is built from it.
      config: resolution and randomization.
      batch: states per call (the render context's number of Warp worlds).

    `scene` and `context` are the explicit arguments of `render_images`, for use inside
    other jitted functions.
    """

    def __init__(self, mj_model: mujoco.MjModel, config: VisionConfig, batch: int):
        if batch < 1:
            raise ValueError(f"batch must be positive, got {batch}")
        self.config = config
        self.batch = batch
        self.mj_model = mj_model
        self.render_model = build_render_model(mj_model)
        self.scene = make_scene(self.render_model)
        # The handle owns Warp's buffers: keep it alive as long as the pytree is used.
        self._context_handle = mjx.create_render_context(
            self.render_model,
            nworld=batch,
            cam_res=(config.width, config.height),
            render_rgb=True,
            render_depth=False,
            cam_active=list(c.CAMERAS),
            use_textures=True,
            use_precomputed_rays=not config.randomize,  # fovy varies per world
        )
        self.context = self._context_handle.pytree()
        self._render = jax.jit(functools.partial(render_images, config=config))

    def render(
        self, key: jax.Array, qpos: jax.Array, mocap_quat: jax.Array | None = None
    ) -> jax.Array:
        """uint8 [batch, cameras, height, width, 3] images of `qpos` [batch, nq]."""
        m = self.mj_model
        if qpos.ndim != 2 or qpos.shape != (self.batch, m.nq):
            raise ValueError(f"qpos must be [batch={self.batch}, nq={m.nq}], got {qpos.shape}")
        if mocap_quat is None:
            mocap_quat = jnp.broadcast_to(
                jnp.asarray(m.body_quat[m.body_mocapid >= 0], jnp.float32),
                (self.batch, m.nmocap, 4),
            )
        if mocap_quat.shape != (self.batch, m.nmocap, 4):
            raise ValueError(
                f"mocap_quat must be [{self.batch}, {m.nmocap}, 4], got {mocap_quat.shape}"
            )
        return self._render(
            self.scene,
            self.context,
            key=key,
            qpos=jnp.asarray(qpos, jnp.float32),
            mocap_quat=jnp.asarray(mocap_quat, jnp.float32),
        )
