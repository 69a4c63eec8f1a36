"""Independent reference implementations for the tests (numpy, scipy and MuJoCo only).

Nothing here calls dexjax code under test: rotations go through scipy's Rotation (which
stores quaternions as x, y, z, w) and model facts are looked up by name in the MjModel.
"""

import jax
import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

PREFIX = "robot0:"

# The paper's coupling rule: the relative target of each coupled actuator (J1 in the
# gymnasium-robotics naming) is taken about the sum of the pair's angles (J1 + J0).
COUPLED_PARTNER = {"FFJ1": "FFJ0", "MFJ1": "MFJ0", "RFJ1": "RFJ0", "LFJ1": "LFJ0"}

FINGERTIP_SITES = tuple(PREFIX + s for s in ("S_fftip", "S_mftip", "S_rftip", "S_lftip", "S_thtip"))


def to_numpy(tree):
    """A pytree of JAX arrays as numpy arrays (typed PRNG keys as their raw key data)."""

    def leaf(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return jax.tree.map(leaf, tree)


def rot(q_wxyz) -> Rotation:
    """scipy Rotation(s) from (w, x, y, z) quaternion(s)."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    return Rotation.from_quat(np.roll(q, -1, axis=-1))


def wxyz(r: Rotation) -> np.ndarray:
    """(w, x, y, z) quaternion(s) of a scipy Rotation."""
    return np.roll(r.as_quat(), 1, axis=-1)


def angle(a_wxyz, b_wxyz) -> np.ndarray:
    """Smallest rotation angle between orientations a and b (scipy)."""
    return (rot(a_wxyz).inv() * rot(b_wxyz)).magnitude()


def object_qpos_adr(m: mujoco.MjModel) -> int:
    return int(m.joint("object:joint").qposadr[0])


def object_dof_adr(m: mujoco.MjModel) -> int:
    return int(m.joint("object:joint").dofadr[0])


def object_quat(qpos, m: mujoco.MjModel) -> np.ndarray:
    o = object_qpos_adr(m)
    q = np.asarray(qpos, dtype=np.float64)[..., o + 3 : o + 7]
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def object_pos(qpos, m: mujoco.MjModel) -> np.ndarray:
    o = object_qpos_adr(m)
    return np.asarray(qpos, dtype=np.float64)[..., o : o + 3]


def actuated_joint_names(m: mujoco.MjModel) -> list[str]:
    """Joint driven by each actuator, in actuator order, without the robot0: prefix.

    A coupled actuator drives a tendon J1 + J0; it is named by its first joint, J1, and
    the tendon must be exactly that sum.
    """
    names = []
    for i in range(m.nu):
        target = int(m.actuator_trnid[i, 0])
        if m.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_TENDON:
            adr, num = m.tendon_adr[target], m.tendon_num[target]
            joints = [
                m.joint(int(m.wrap_objid[adr + k])).name.removeprefix(PREFIX) for k in range(num)
            ]
            assert num == 2 and COUPLED_PARTNER[joints[0]] == joints[1]
            np.testing.assert_array_equal(m.wrap_prm[adr : adr + num], [1.0, 1.0])
            names.append(joints[0])
        else:
            assert m.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT
            names.append(m.joint(target).name.removeprefix(PREFIX))
    return names


def hand_joint_names(m: mujoco.MjModel) -> list[str]:
    """The 24 hinge joints of the hand in model order."""
    return [
        m.joint(j).name
        for j in range(m.njnt)
        if m.joint(j).name.startswith(PREFIX) and m.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE
    ]


def expected_joint_targets(m, qpos, action, ctrl, relative_to="current", locked_wrist=False):
    """Reference for HandEnv.joint_targets, written from the task description.

    `action` has one entry per *active* actuator (all 20, or the 18 non-wrist ones).
    """
    qpos = np.asarray(qpos, np.float64)
    ctrl = np.asarray(ctrl, np.float64)
    action = list(np.asarray(action, np.float64))
    out = ctrl.copy()
    for i, name in enumerate(actuated_joint_names(m)):
        lo, hi = m.actuator_ctrlrange[i]
        if locked_wrist and name.startswith("WRJ"):
            out[i] = np.clip(ctrl[i], lo, hi)
            continue
        a = action.pop(0)
        if relative_to == "target":
            center = ctrl[i]
        elif relative_to == "center":
            center = 0.5 * (lo + hi)
        else:
            center = qpos[m.joint(PREFIX + name).qposadr[0]]
            if name in COUPLED_PARTNER:
                center += qpos[m.joint(PREFIX + COUPLED_PARTNER[name]).qposadr[0]]
        out[i] = np.clip(center + a * 0.5 * (hi - lo), lo, hi)
    assert not action, "action longer than the number of active actuators"
    return out
