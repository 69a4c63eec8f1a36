"""The MjSpec-built scene (native MuJoCo only: nothing here compiles MJX code)."""

import mujoco
import numpy as np
import pytest
from reference import PREFIX, hand_joint_names, object_qpos_adr

from dexjax import scene

# Every hand collision geom that may touch the object (the forearm mesh is left out).
EXPECTED_HAND_GEOMS = (
    "C_wrist", "C_palm0", "C_palm1",
    "C_ffproximal", "C_ffmiddle", "C_ffdistal",
    "C_mfproximal", "C_mfmiddle", "C_mfdistal",
    "C_rfproximal", "C_rfmiddle", "C_rfdistal",
    "C_lfmetacarpal", "C_lfproximal", "C_lfmiddle", "C_lfdistal",
    "C_thproximal", "C_thmiddle", "C_thdistal",
)  # fmt: skip


@pytest.fixture(scope="module")
def model():
    return scene.build_model()


def _pairs(model):
    return {
        frozenset((model.geom(model.pair_geom1[i]).name, model.geom(model.pair_geom2[i]).name))
        for i in range(model.npair)
    }


def test_contacts_are_exactly_object_vs_hand(model):
    expected = {frozenset((PREFIX + g, "object")) for g in EXPECTED_HAND_GEOMS}
    assert model.npair == len(expected) == 19
    assert _pairs(model) == expected
    # The hand's contact geoms with a "C_" name are all paired with the object except the
    # forearm, which is removed.
    c_geoms = {model.geom(i).name for i in range(model.ngeom) if ":C_" in model.geom(i).name}
    assert c_geoms == {PREFIX + g for g in EXPECTED_HAND_GEOMS}


def test_no_geom_collides_through_contype_conaffinity(model):
    assert np.all(model.geom_contype == 0)
    assert np.all(model.geom_conaffinity == 0)


def test_floor_contact_and_condim_options():
    m = scene.build_model(scene.SceneConfig(floor_contact=True, object_condim=4))
    assert frozenset(("floor", "object")) in _pairs(m)
    for i in range(m.npair):
        names = {m.geom(m.pair_geom1[i]).name, m.geom(m.pair_geom2[i]).name}
        assert m.pair_dim[i] == (3 if "floor" in names else 4)


def test_hand_object_pairs_have_sliding_friction_by_default(model):
    np.testing.assert_array_equal(model.pair_dim, 3)


def test_unused_sensors_and_inactive_tendon_limits_are_removed(model):
    assert model.nsensor == 0
    # What stays: the two-joint tendons of the coupled fingers (the J1/J0 coupling, limited
    # to +-1 mm, and its u/d limits) and the 4 tendons the coupled actuators drive; every
    # single-joint tendon limit that could never bind is gone.
    shipped = mujoco.MjModel.from_xml_path(str(scene.shipped_hand_xml()))
    assert shipped.ntendon == 44 and shipped.nsensor > 0
    names = {model.tendon(i).name for i in range(model.ntendon)}
    assert {f"{PREFIX}T_{f}J1c" for f in ("FF", "MF", "RF", "LF")} <= names
    for i in range(model.ntendon):
        if model.tendon_num[i] == 1:  # a remaining single-joint limit must be reachable
            adr = model.tendon_adr[i]
            low, high = sorted(model.tendon_range[i] / model.wrap_prm[adr])
            jlow, jhigh = model.jnt_range[model.wrap_objid[adr]]
            assert low > jlow or high < jhigh


def test_cameras_and_solver_options(model):
    assert model.ncam == 3
    assert {model.cam(i).name for i in range(3)} == {"cam_left", "cam_right", "cam_top"}
    assert model.opt.timestep == pytest.approx(0.008)
    assert model.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
    assert model.opt.disableflags & mujoco.mjtDisableBit.mjDSBL_WARMSTART


def test_cameras_look_at_the_hand(model):
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    palm = np.array([1.0, 0.87, 0.17])
    for i in range(model.ncam):
        look = -data.cam_xmat[i].reshape(3, 3)[:, 2]  # cameras look along their -z axis
        to_palm = palm - data.cam_xpos[i]
        cos = look @ to_palm / np.linalg.norm(to_palm)
        assert cos > np.cos(np.deg2rad(10)), model.cam(i).name


def test_hand_has_24_joints_20_actuators_and_a_free_object(model):
    assert len(hand_joint_names(model)) == 24
    assert model.nu == 20
    assert model.nq == 24 + 7 and model.nv == 24 + 6
    obj = model.joint("object:joint")
    assert obj.type == mujoco.mjtJoint.mjJNT_FREE
    o = object_qpos_adr(model)
    np.testing.assert_allclose(model.qpos0[o : o + 3], scene.OBJECT_START_POS)


def test_block_mass_and_size(model):
    # 5 cm cube of density 567 kg/m^3.
    assert model.body("object").mass[0] == pytest.approx(0.05**3 * 567.0, rel=1e-6)
    np.testing.assert_allclose(model.geom("object").size, [0.025, 0.025, 0.025])


def test_goal_marker_is_visual_mocap(model):
    goal = model.body("goal")
    assert goal.mocapid[0] >= 0
    assert model.body_jntnum[goal.id] == 0


def test_octagon_scene_builds_natively():
    m = scene.build_model(scene.SceneConfig(object="octagon"))
    geom = m.geom("object")
    assert geom.type == mujoco.mjtGeom.mjGEOM_MESH
    assert m.mesh_vertnum[geom.dataid[0]] == 16
    # Regular octagonal prism, circumradius R = 2.5 cm and height 5 cm:
    # area 2 sqrt(2) R^2, volume 4 sqrt(2) R^2 h.
    r = h = 0.025
    assert m.body("object").mass[0] == pytest.approx(4 * np.sqrt(2) * r**2 * h * 567.0, rel=1e-3)
    # It simulates: dropped onto the open hand it stays finite and above the floor.
    d = mujoco.MjData(m)
    for _ in range(100):
        mujoco.mj_step(m, d)
    assert np.all(np.isfinite(d.qpos))


def test_scene_config_rejects_unknown_object():
    with pytest.raises(ValueError, match="octagon"):
        scene.SceneConfig(object="sphere")
