"""The scene, built in code: the OpenAI Shadow hand from gymnasium-robotics plus our object.

The hand's MJCF ships inside the installed `gymnasium-robotics` package; it is loaded from
there with `mujoco.MjSpec` and edited here, never copied. What we change and why:
- the shipped object and target bodies are replaced by ours: a free block (or an octagonal
  prism) and a mocap goal marker that is visual only (no degrees of freedom, no contacts);
- collisions are explicit contact pairs only: the object against every hand collision geom.
  MJX's cost grows with the number of *possible* contacts, so the shipped finger vs thumb
  pairs and all contype/conaffinity collisions are switched off; the forearm mesh is
  removed from collisions (MJX's JAX implementation cannot give meshes margins). The
  object-floor pair is optional and off: an episode ends (drop) with the object 7.5 cm
  above the floor, so the floor never touches it during an episode;
- what the task never uses and MJX would still compute: the joint-position sensors, and the
  limits of the single-joint tendons whose range contains the whole joint range (they can
  never become active, yet each adds a constraint row);
- solver settings for speed (pyramidal cones, 3-dimensional contacts, few iterations, 8 ms
  steps), whose stability is proven by tests;
- the four coupled finger actuators (FFJ1, MFJ1, RFJ1, LFJ1) drive the *sum* of the coupled
  pair J1 + J0 through a fixed tendon, as the real hand's coupled actuators do; the shipped
  model drives J1 alone, which makes a target "relative to the sum of the pair" (the
  paper's rule) push the finger closed on its own;
- three fixed cameras around the hand for the vision branch.
"""

import dataclasses
import importlib.util
import pathlib

import mujoco
import numpy as np

from dexjax import constants as c

OBJECTS = ("block", "octagon")

# Where the object is placed above the palm at reset (world frame, metres).
OBJECT_START_POS = (1.0, 0.87, 0.2)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """How the simulated scene is built."""

    object: str = "block"
    """Object to manipulate: "block" (5 cm cube) or "octagon" (octagonal prism)."""
    object_half_size: float = 0.025
    """Half edge of the block; circumradius / half height of the octagonal prism (m)."""
    object_density: float = 567.0
    """kg/m^3 (the shipped block's value; a 5 cm block then weighs 71 g)."""
    timestep: float = 0.008
    """Physics substep (s). Ten substeps make one 80 ms control step."""
    solver_iterations: int = 4
    ls_iterations: int = 4
    pyramidal_cone: bool = True
    """Pyramidal friction cones: 2-3x faster than elliptic in MJX on CPU."""
    object_condim: int = 3
    """Contact dimensionality of the hand-object pairs: 3 (sliding friction) or 4 (plus
    torsional friction, as the shipped model has; about 30% slower in MJX)."""
    floor_contact: bool = False
    """Add the object-floor contact pair (irrelevant to the task: see the module doc)."""
    hand_self_collisions: bool = False
    """Keep the shipped finger vs thumb contact pairs (slower; off by default)."""
    cameras: bool = True
    """Add the three vision cameras."""

    def __post_init__(self):
        if self.object not in OBJECTS:
            raise ValueError(f"unknown object {self.object!r}; choose one of {OBJECTS}")
        if self.timestep <= 0 or self.object_half_size <= 0:
            raise ValueError("timestep and object_half_size must be positive")
        if self.object_condim not in (1, 3, 4, 6):
            raise ValueError("object_condim must be 1, 3, 4 or 6")


def shipped_hand_xml() -> pathlib.Path:
    """Path of the Shadow-hand block scene inside the installed gymnasium-robotics."""
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "dexjax loads the Shadow hand model from the `gymnasium-robotics` package; "
            "install it with `pip install gymnasium-robotics==1.4.2`"
        )
    root = pathlib.Path(list(spec.submodule_search_locations)[0])
    path = root / "envs" / "assets" / "hand" / "manipulate_block.xml"
    if not path.exists():
        raise FileNotFoundError(f"Shadow hand model not found at {path}")
    return path


def _octagon_vertices(radius: float, half_height: float) -> np.ndarray:
    angles = np.pi / 8 + np.arange(8) * np.pi / 4
    ring = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
    top = np.concatenate([ring, np.full((8, 1), half_height)], axis=1)
    bottom = np.concatenate([ring, np.full((8, 1), -half_height)], axis=1)
    return np.concatenate([top, bottom]).astype(np.float64)


def _look_at_quat(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Quaternion of a camera at `pos` looking at `target` with world +z as up."""
    forward = target - pos
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    # A MuJoCo camera looks along its -z axis with +y up.
    mat = np.stack([right, up, -forward], axis=1)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.flatten())
    return quat


def _add_object(spec: mujoco.MjSpec, config: SceneConfig) -> None:
    body = spec.worldbody.add_body(name=c.OBJECT_BODY, pos=OBJECT_START_POS)
    body.add_freejoint(name=c.OBJECT_JOINT)
    h = config.object_half_size
    common = dict(
        name=c.OBJECT_GEOM,
        density=config.object_density,
        condim=4,
        friction=(1.0, 0.005, 0.001),
        contype=0,
        conaffinity=0,
    )
    if config.object == "block":
        body.add_geom(
            type=mujoco.mjtGeom.mjGEOM_BOX, size=(h, h, h), material="material:object", **common
        )
    else:
        spec.add_mesh(name="octagon", uservert=_octagon_vertices(h, h).flatten().tolist())
        body.add_geom(
            type=mujoco.mjtGeom.mjGEOM_MESH, meshname="octagon", rgba=(0.9, 0.5, 0.1, 1), **common
        )
    body.add_site(name="object:center", size=(0.005, 0.005, 0.005), rgba=(1, 0, 0, 0))

    # The goal marker: a translucent copy beside the hand, moved by the env (mocap).
    goal = spec.worldbody.add_body(name=c.GOAL_BODY, pos=(1.0, 0.87, 0.28), mocap=True)
    goal_geom = dict(contype=0, conaffinity=0, group=2, rgba=(1, 1, 1, 0.4))
    if config.object == "block":
        goal.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=(h, h, h), **goal_geom)
    else:
        goal.add_geom(type=mujoco.mjtGeom.mjGEOM_MESH, meshname="octagon", **goal_geom)


def _add_cameras(spec: mujoco.MjSpec) -> None:
    target = np.array([1.0, 0.90, 0.17])
    positions = {
        "cam_left": np.array([0.70, 0.70, 0.40]),
        "cam_right": np.array([1.30, 0.70, 0.40]),
        "cam_top": np.array([1.0, 1.05, 0.55]),
    }
    for name in c.CAMERAS:
        pos = positions[name]
        spec.worldbody.add_camera(name=name, pos=pos, quat=_look_at_quat(pos, target), fovy=45)


def _couple_actuators(spec: mujoco.MjSpec) -> None:
    """Coupled actuators act on J1 + J0 (a fixed tendon) with the summed range."""
    for j1, j0 in c.COUPLED_JOINTS.items():
        tendon = spec.add_tendon(name=f"{c.PREFIX}T_{j1}{j0[-2:]}_sum")
        tendon.wrap_joint(c.PREFIX + j1, 1.0)
        tendon.wrap_joint(c.PREFIX + j0, 1.0)
        actuator = spec.actuator(f"{c.PREFIX}A_{j1}")
        lo = spec.joint(c.PREFIX + j1).range[0] + spec.joint(c.PREFIX + j0).range[0]
        hi = spec.joint(c.PREFIX + j1).range[1] + spec.joint(c.PREFIX + j0).range[1]
        actuator.trntype = mujoco.mjtTrn.mjTRN_TENDON
        actuator.target = tendon.name
        actuator.ctrlrange = (lo, hi)


def _drop_inactive_tendon_limits(spec: mujoco.MjSpec) -> None:
    """Unlimit single-joint tendons whose range contains their joint's whole range."""
    model = spec.compile()
    for i in range(model.ntendon):
        adr, num = model.tendon_adr[i], model.tendon_num[i]
        if num != 1 or not model.tendon_limited[i]:
            continue
        joint, coef = model.wrap_objid[adr], model.wrap_prm[adr]
        low, high = sorted(np.asarray(model.tendon_range[i]) / coef)
        joint_low, joint_high = model.jnt_range[joint]
        if low <= joint_low and high >= joint_high:
            spec.delete(spec.tendon(model.tendon(i).name))


def build_spec(config: SceneConfig = SceneConfig()) -> mujoco.MjSpec:
    """The scene as an editable MjSpec (compile it with `build_model`)."""
    spec = mujoco.MjSpec.from_file(str(shipped_hand_xml()))
    spec.modelname = f"dexjax_shadow_{config.object}"

    for name in ("object", "target"):
        spec.delete(spec.body(name))
    spec.delete(spec.body("floor0"))
    floor = spec.geom("floor0")
    floor.name = c.FLOOR_GEOM
    spec.delete(spec.geom(c.PREFIX + "C_forearm"))

    for geom in spec.geoms:
        geom.contype = 0
        geom.conaffinity = 0
    if not config.hand_self_collisions:
        for pair in list(spec.pairs):
            spec.delete(pair)

    _couple_actuators(spec)
    _add_object(spec, config)
    for name in c.HAND_COLLISION_GEOMS:
        spec.add_pair(
            geomname1=c.PREFIX + name, geomname2=c.OBJECT_GEOM, condim=config.object_condim
        )
    if config.floor_contact:
        spec.add_pair(geomname1=c.FLOOR_GEOM, geomname2=c.OBJECT_GEOM, condim=3)
    for sensor in list(spec.sensors):
        spec.delete(sensor)
    _drop_inactive_tendon_limits(spec)
    if config.cameras:
        _add_cameras(spec)

    opt = spec.option
    opt.timestep = config.timestep
    opt.iterations = config.solver_iterations
    opt.ls_iterations = config.ls_iterations
    opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
    opt.cone = (
        mujoco.mjtCone.mjCONE_PYRAMIDAL if config.pyramidal_cone else mujoco.mjtCone.mjCONE_ELLIPTIC
    )
    opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_WARMSTART
    return spec


def build_model(config: SceneConfig = SceneConfig()) -> mujoco.MjModel:
    """The compiled MjModel of the scene."""
    return build_spec(config).compile()
