"""Physics backends behind one interface: MJX (accelerators) and MuJoCo's C engine (CPUs).

The environment (`dexjax.env`) never calls a simulator directly: it asks its backend to
make a state at given joint positions, to advance it by one control step with the
episode's model, and to move it to a new start. Both backends take the episode's physics
as an `mjx.Model` whose fields were rewritten by `randomization.episode_model`, so the
randomized values are computed once, in JAX, for either engine.

- `MjxBackend`: `mjx.step` inside XLA (`impl="jax"`): the backend for GPUs and TPUs.
- `CBackend`: MuJoCo's C engine through `mujoco.rollout` with a persistent thread pool,
  called from inside the compiled program as a named XLA FFI target (`host_calls`: such
  programs go to JAX's persistent compilation cache like any other). Each environment
  slot of a batch has its own `MjModel` on the host; before a step the slot's randomized
  fields are written into it (only those whose values changed since that slot's last
  write). On a CPU it steps this hand about an order of magnitude faster than MJX.

The C backend's state (`CData`) carries the fields the environment reads with the same
names and shapes as `mjx.Data` (`qpos`, `qvel`, `ctrl`, `xfrc_applied`, `mocap_quat`,
`site_xpos`, `site_xmat`), so the environment's code is the same for both.

What differs between the two (documented for users in the README):
- Substep durations: with timing randomization on, MJX gives each of the control step's
  substeps its own duration; the C engine steps one rollout per control step with one
  timestep, the mean of the same durations (the control step's total duration is
  identical; its split between substeps is even).
- Precision: the C engine integrates in float64 and hands float32 states back to JAX at
  each control step; MJX runs in float32 throughout.
- Failures: a C step that raised a MuJoCo warning (bad accelerations, contact or
  constraint overflow) reports `failed` for that slot. MJX has no warnings: its `failed`
  means a non-finite position or velocity.
"""

import collections
import copy
import hashlib
import math
import os
import threading
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from mujoco import mjx, rollout

from dexjax import host_calls

BACKENDS = ("auto", "mjx", "c")

RANDOMIZED_FIELDS = (
    "body_mass",
    "body_inertia",
    "geom_size",
    "geom_rbound",
    "geom_aabb",
    "pair_friction",
    "dof_damping",
    "actuator_gainprm",
    "actuator_biasprm",
    "jnt_range",
)
"""The `mjx.Model` fields that `randomization.episode_model` rewrites (besides the
gravity and timestep options), which the C backend copies into each slot's MjModel."""

_STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS
_CONTROL_SPEC = mujoco.mjtState.mjSTATE_CTRL | mujoco.mjtState.mjSTATE_XFRC_APPLIED
# Each rollout starts at this simulation time: a MuJoCo warning either stops the rollout
# early or resets the data (time 0), so an end time short of START + steps * timestep
# marks the slot as failed.
_START_TIME = 1.0


def resolve(backend: str) -> str:
    """The backend to run: "auto" is "c" when JAX's default device is a CPU, else "mjx"."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown physics backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "c" if jax.default_backend() == "cpu" else "mjx"
    if backend == "c" and jax.default_backend() != "cpu":
        raise ValueError(
            f"the C physics backend runs on the host CPU, but JAX's default device is "
            f"{jax.default_backend()!r}; use env.backend=mjx (or auto) on accelerators"
        )
    return backend


def default_threads() -> int:
    """Threads of the C engine's pool: the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---- MJX ---------------------------------------------------------------------------------


class MjxBackend:
    """MJX's JAX implementation: the whole step inside XLA."""

    name = "mjx"

    def __init__(self, mj_model: mujoco.MjModel):
        # On this process's device: with jax.distributed, jax.devices()[0] (MJX's default)
        # belongs to process 0, and every other process would fail to place its data.
        self.device = jax.local_devices()[0]
        self.model = mjx.put_model(mj_model, device=self.device)
        self._pair_geoms = np.stack([mj_model.pair_geom1, mj_model.pair_geom2], axis=1)

    def make_data(self, qpos: jax.Array) -> mjx.Data:
        """A state at rest at `qpos` with zero controls, its kinematics computed."""
        data = mjx.make_data(self.model, device=self.device).replace(qpos=qpos)
        return mjx.forward(self.model, data)

    def step(self, model: mjx.Model, data: mjx.Data, durations: jax.Array | None) -> mjx.Data:
        """Physics substeps: one per entry of `durations` (s), or `substeps` nominal ones
        when `durations` is an int."""
        if isinstance(durations, int):
            return jax.lax.scan(lambda d, _: (mjx.step(model, d), None), data, None, durations)[0]

        def timed_substep(d, dt):
            return mjx.step(model.replace(opt=model.opt.replace(timestep=dt)), d), None

        return jax.lax.scan(timed_substep, data, durations)[0]

    def restart(self, data: mjx.Data, qpos: jax.Array, ctrl: jax.Array, due: jax.Array):
        """`data` at rest at `qpos` with targets `ctrl` and no applied forces."""
        del due  # computed for every environment: the caller selects
        new = data.replace(
            qpos=qpos,
            qvel=jnp.zeros_like(data.qvel),
            qacc_warmstart=jnp.zeros_like(data.qacc_warmstart),
            ctrl=ctrl,
            xfrc_applied=jnp.zeros_like(data.xfrc_applied),
        )
        return mjx.kinematics(self.model, new)

    def touching(self, data: mjx.Data) -> jax.Array:
        """[npair] bool: the contact pair had an active contact (distance below its
        margin) in the last substep."""
        contact = data._impl.contact  # noqa: SLF001 (MJX's JAX implementation's contacts)
        active = contact.dist < contact.includemargin  # [ncon]
        pairs = jnp.asarray(self._pair_geoms)  # [npair, 2]
        same = jnp.all(contact.geom[:, None] == pairs[None], axis=-1)
        swapped = jnp.all(contact.geom[:, None] == pairs[None, :, ::-1], axis=-1)
        return jnp.any(active[:, None] & (same | swapped), axis=0)

    def failed(self, data: mjx.Data) -> jax.Array:
        return ~(jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel)))


# ---- the C engine ------------------------------------------------------------------------


@struct.dataclass
class CData:
    """One environment's physics state on the C backend (float32 copies of the host's).

    Field names and shapes are mjx.Data's. Site poses are those of the last substep's
    forward pass, as in MJX after `mjx.step`."""

    time: jax.Array  # [] simulated seconds
    qpos: jax.Array  # [nq]
    qvel: jax.Array  # [nv]
    ctrl: jax.Array  # [nu]
    xfrc_applied: jax.Array  # [nbody, 6] held through the control step
    mocap_quat: jax.Array  # [nmocap, 4] (visual only)
    site_xpos: jax.Array  # [nsite, 3]
    site_xmat: jax.Array  # [nsite, 3, 3]
    contacts: jax.Array  # [npair] contacts of each contact pair in the last substep
    failed: jax.Array  # [] bool: the engine raised a warning in the last step


class CEngine:
    """Host side of the C backend: the nominal model with site sensors, one MjModel per
    environment slot, one MjData per thread, and MuJoCo's rollout pool.

    Every call is a pure function of its arguments: a slot's model fields are written from
    the arguments before it steps (skipped where they equal the slot's last write)."""

    def __init__(self, spec: mujoco.MjSpec, nthread: int):
        self.nominal = with_sensors(spec)
        m = self.nominal
        self.nthread = nthread
        self.nstate = mujoco.mj_stateSize(m, _STATE_SPEC)
        if self.nstate != 1 + m.nq + m.nv + m.na:
            raise ValueError("the C backend needs a model without plugins or history buffers")
        if m.na:
            raise ValueError("the C backend supports models without actuator activations")
        self.ncontrol = mujoco.mj_stateSize(m, _CONTROL_SPEC)
        self._datas = [mujoco.MjData(m) for _ in range(max(nthread, 1))]
        self._kinematics_data = mujoco.MjData(m)
        self._pool = rollout.Rollout(nthread=nthread if nthread > 1 else 0)
        self._models: list[mujoco.MjModel] = []
        width = sum(np.size(getattr(m, k)) for k in RANDOMIZED_FIELDS) + 3  # + gravity
        self._written = np.zeros((0, width))  # [slots, parameters] each slot's last write
        self._lock = threading.Lock()
        self._call_lock = threading.Lock()
        self._recent = collections.deque(maxlen=4)  # (arguments, results) of the last steps
        self.seconds = {"rollout": 0.0, "host": 0.0}
        """Wall-clock seconds spent in MuJoCo's rollout, and in the host calls in all
        (rollout, parameter writes, array conversion): for benchmarks."""

    def _slots(self, n: int) -> list[mujoco.MjModel]:
        while len(self._models) < n:
            self._models.append(copy.copy(self.nominal))
            nothing_written = np.full((1, self._written.shape[1]), np.nan)
            self._written = np.concatenate([self._written, nothing_written])
        return self._models[:n]

    def _write(self, models: list[mujoco.MjModel], params: dict[str, np.ndarray]) -> None:
        """Write each slot's parameters into its model: the episode's fields where they
        changed since the slot's last write, the substep length (new every step) always."""
        names = (*RANDOMIZED_FIELDS, "gravity")
        flat = np.concatenate([params[k].reshape(len(models), -1) for k in names], axis=1)
        for i in np.flatnonzero(np.any(flat != self._written[: len(models)], axis=1)):
            m = models[i]
            for name in RANDOMIZED_FIELDS:
                getattr(m, name)[...] = params[name][i]
            m.opt.gravity[:] = params["gravity"][i]
            self._written[i] = flat[i]
        for m, timestep in zip(models, params["timestep"].tolist(), strict=True):
            m.opt.timestep = timestep

    def step(self, qpos, qvel, ctrl, xfrc, params, nstep: int):
        """`nstep` substeps of every slot (host arrays with one leading batch axis).

        A call with the same arguments as one of the last few returns that call's results
        without stepping again: in a program whose batch is split over several local CPU
        devices, XLA gathers the batch and every device makes the same call."""
        inputs = (qpos, qvel, ctrl, xfrc, *(params[k] for k in sorted(params)), np.int64(nstep))
        with self._call_lock:
            for seen, outs in self._recent:
                if all(
                    a.shape == b.shape and np.array_equal(a, b)
                    for a, b in zip(seen, inputs, strict=True)
                ):
                    return outs
            outs = self._step(qpos, qvel, ctrl, xfrc, params, nstep)
            self._recent.append((tuple(np.array(a) for a in inputs), outs))  # copies
            return outs

    def _step(self, qpos, qvel, ctrl, xfrc, params, nstep: int):
        begin = time.perf_counter()
        n = qpos.shape[0]
        m = self.nominal
        state0 = np.empty((n, self.nstate))
        state0[:, 0] = _START_TIME
        state0[:, 1 : 1 + m.nq] = qpos
        state0[:, 1 + m.nq :] = qvel
        control = np.empty((n, 1, self.ncontrol))
        control[:, 0, : m.nu] = ctrl
        control[:, 0, m.nu :] = xfrc.reshape(n, -1)
        control = np.ascontiguousarray(np.broadcast_to(control, (n, nstep, self.ncontrol)))
        state = np.empty((n, nstep, self.nstate))
        sensordata = np.empty((n, nstep, m.nsensordata))
        with self._lock:
            models = self._slots(n)
            self._write(models, params)
            rollout_begin = time.perf_counter()
            self._pool.rollout(
                models,
                self._datas,
                state0,
                control,
                control_spec=_CONTROL_SPEC,
                skip_checks=True,
                nstep=nstep,
                state=state,
                sensordata=sensordata,
            )
            self.seconds["rollout"] += time.perf_counter() - rollout_begin
        last = state[:, -1]
        elapsed = last[:, 0] - _START_TIME
        timestep = params["timestep"].astype(np.float64)
        failed = elapsed < (nstep - 0.5) * timestep
        failed |= ~np.all(np.isfinite(last), axis=1)
        site_xpos, site_xmat, contacts = _readings(sensordata[:, -1], m.nsite)
        qpos, qvel = last[:, 1 : 1 + m.nq], last[:, 1 + m.nq :]
        self.seconds["host"] += time.perf_counter() - begin
        return elapsed, qpos, qvel, site_xpos, site_xmat, contacts, failed

    def kinematics(self, qpos, due):
        """Site poses at `qpos` for the slots where `due` is set (zeros elsewhere)."""
        n, m, d = qpos.shape[0], self.nominal, self._kinematics_data
        site_xpos = np.zeros((n, m.nsite, 3))
        site_xmat = np.zeros((n, m.nsite, 3, 3))
        with self._lock:
            for i in np.flatnonzero(due):
                d.qpos[:] = qpos[i]
                mujoco.mj_kinematics(m, d)
                site_xpos[i] = d.site_xpos
                site_xmat[i] = d.site_xmat.reshape(-1, 3, 3)
        return site_xpos, site_xmat


def _readings(sensordata: np.ndarray, nsite: int) -> tuple[np.ndarray, ...]:
    """[n, nsite, 3] site positions, [n, nsite, 3, 3] site rotation matrices (site_xmat)
    and [n, npair] contacts per contact pair, from `with_sensors`' sensor readings."""
    n = len(sensordata)
    sites = sensordata[:, : 12 * nsite].reshape(n, nsite, 4, 3)
    # Frame axis k is column k of the rotation matrix.
    return sites[:, :, 0], np.swapaxes(sites[:, :, 1:], -1, -2), sensordata[:, 12 * nsite :]


def with_sensors(spec: mujoco.MjSpec) -> mujoco.MjModel:
    """The scene compiled with sensors of what the environment reads: every site's
    position and frame axes, then each contact pair's number of contacts, so a rollout
    returns them for its last substep. Sensors do not act on the physics: the model steps
    as the one compiled without them."""
    for sensor in list(spec.sensors):
        spec.delete(sensor)
    for site in [site.name for site in spec.sites]:
        for kind in ("FRAMEPOS", "FRAMEXAXIS", "FRAMEYAXIS", "FRAMEZAXIS"):
            spec.add_sensor(
                type=getattr(mujoco.mjtSensor, f"mjSENS_{kind}"),
                objtype=mujoco.mjtObj.mjOBJ_SITE,
                objname=site,
            )
    for pair in spec.pairs:
        sensor = spec.add_sensor(
            type=mujoco.mjtSensor.mjSENS_CONTACT,
            objtype=mujoco.mjtObj.mjOBJ_GEOM,
            objname=pair.geomname1,
            reftype=mujoco.mjtObj.mjOBJ_GEOM,
            refname=pair.geomname2,
        )
        # intprm: the data reported (bits of mjtConDataField), reduction (none), and
        # how many contacts to report: here only their number ("found").
        sensor.intprm[0] = 1 << int(mujoco.mjtConDataField.mjCONDATA_FOUND)
        sensor.intprm[1] = 0
        sensor.intprm[2] = 1
    model = spec.compile()
    if model.nsensordata != 12 * model.nsite + model.npair:
        raise ValueError("unexpected sensor layout in the C backend's model")
    return model


_ENGINES: dict[int, CEngine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_id(key: tuple, nthread: int) -> int:
    """A number naming a scene's engine, the same in every process: compiled programs
    carry it, and are cached across processes."""
    digest = hashlib.sha256(repr((key, nthread)).encode()).digest()
    return int.from_bytes(digest[:7], "little")


def engine(key: tuple, spec_fn, nthread: int) -> tuple[int, CEngine]:
    """The process's engine for a scene (built on first use from `spec_fn()`), and its id."""
    number = engine_id(key, nthread)
    with _ENGINES_LOCK:
        if number not in _ENGINES:
            _ENGINES[number] = CEngine(spec_fn(), nthread)
        return number, _ENGINES[number]


def _flat(lead: tuple[int, ...], arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Under `vmap` (broadcast_all) every argument and result of a host call gains the
    same batch axes in front of its own shape: views with those axes flattened into one."""
    n = math.prod(lead)
    return [a.reshape(n, *a.shape[len(lead) :]) for a in arrays]


_PARAMS = (*RANDOMIZED_FIELDS, "gravity", "timestep")


def _step_target(args, rets, attrs) -> None:
    """Host call `dexjax_c_step`: (qpos, qvel, ctrl, xfrc, *_PARAMS) -> (elapsed, qpos,
    qvel, site_xpos, site_xmat, contacts, failed), `nstep` substeps."""
    lead = args[0].shape[:-1]  # qpos is a vector per environment
    qpos, qvel, ctrl, xfrc, *params = _flat(lead, args)
    params = dict(zip(_PARAMS, params, strict=True))
    outs = _ENGINES[attrs["engine"]].step(qpos, qvel, ctrl, xfrc, params, attrs["nstep"])
    for ret, out in zip(_flat(lead, rets), outs, strict=True):
        ret[...] = out


def _kinematics_target(args, rets, attrs) -> None:
    """Host call `dexjax_c_kinematics`: (qpos, due) -> (site_xpos, site_xmat)."""
    lead = args[0].shape[:-1]
    outs = _ENGINES[attrs["engine"]].kinematics(*_flat(lead, args))
    for ret, out in zip(_flat(lead, rets), outs, strict=True):
        ret[...] = out


host_calls.register("dexjax_c_step", _step_target)
host_calls.register("dexjax_c_kinematics", _kinematics_target)


class CBackend:
    """MuJoCo's C engine, called from inside the compiled program (`host_calls`)."""

    name = "c"

    def __init__(self, mj_model: mujoco.MjModel, spec_fn, key: tuple, nthread: int | None = None):
        if jax.process_count() > 1:
            raise ValueError(
                "the C physics backend runs in a single process; with jax.distributed "
                "use env.backend=mjx"
            )
        self.engine_id, self.engine = engine(key, spec_fn, nthread or default_threads())
        self.mj_model = mj_model
        self.model = mjx.put_model(mj_model, device=jax.local_devices()[0])
        m = mj_model
        self._shapes = dict(
            qpos=(m.nq,),
            qvel=(m.nv,),
            site_xpos=(m.nsite, 3),
            site_xmat=(m.nsite, 3, 3),
            contacts=(m.npair,),
        )

    def _out(self, *names):
        return tuple(jax.ShapeDtypeStruct(self._shapes[k], jnp.float32) for k in names)

    def kinematics(self, qpos: jax.Array, due: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Site poses at `qpos` (computed on the host only where `due` is set)."""
        out = self._out("site_xpos", "site_xmat")
        return host_calls.call("dexjax_c_kinematics", out, qpos, due, engine=self.engine_id)

    def make_data(self, qpos: jax.Array) -> CData:
        """A state at rest at `qpos` with zero controls, its kinematics computed."""
        m = self.mj_model
        site_xpos, site_xmat = self.kinematics(qpos, jnp.array(True))
        return CData(
            time=jnp.zeros(()),
            qpos=qpos,
            qvel=jnp.zeros(m.nv),
            ctrl=jnp.zeros(m.nu),
            xfrc_applied=jnp.zeros((m.nbody, 6)),
            mocap_quat=jnp.asarray(mujoco.MjData(m).mocap_quat, jnp.float32),
            site_xpos=site_xpos,
            site_xmat=site_xmat,
            contacts=jnp.zeros(m.npair),
            failed=jnp.array(False),
        )

    def step(self, model: mjx.Model, data: CData, durations: jax.Array | int) -> CData:
        """One rollout of the substeps with the episode's `model` fields. With per-substep
        `durations` (s) the rollout steps their mean (see the module doc); an int is a
        number of nominal substeps."""
        if isinstance(durations, int):
            nstep, timestep = durations, model.opt.timestep
        else:
            nstep, timestep = durations.shape[0], jnp.mean(durations)
        params = [getattr(model, name) for name in RANDOMIZED_FIELDS]
        params += [model.opt.gravity, jnp.asarray(timestep, jnp.float32)]
        out = (
            jax.ShapeDtypeStruct((), jnp.float32),
            *self._out("qpos", "qvel", "site_xpos", "site_xmat", "contacts"),
            jax.ShapeDtypeStruct((), jnp.bool_),
        )
        elapsed, qpos, qvel, site_xpos, site_xmat, contacts, failed = host_calls.call(
            "dexjax_c_step",
            out,
            data.qpos,
            data.qvel,
            data.ctrl,
            data.xfrc_applied,
            *params,
            engine=self.engine_id,
            nstep=nstep,
        )
        return data.replace(
            time=data.time + elapsed,
            qpos=qpos,
            qvel=qvel,
            site_xpos=site_xpos,
            site_xmat=site_xmat,
            contacts=contacts,
            failed=failed,
        )

    def restart(self, data: CData, qpos: jax.Array, ctrl: jax.Array, due: jax.Array) -> CData:
        """`data` at rest at `qpos` with targets `ctrl` and no applied forces; its site
        poses are computed where `due` is set (the caller keeps the others' old state)."""
        site_xpos, site_xmat = self.kinematics(qpos, due)
        return data.replace(
            qpos=qpos,
            qvel=jnp.zeros_like(data.qvel),
            ctrl=ctrl,
            xfrc_applied=jnp.zeros_like(data.xfrc_applied),
            site_xpos=site_xpos,
            site_xmat=site_xmat,
            contacts=jnp.zeros_like(data.contacts),
            failed=jnp.array(False),
        )

    def touching(self, data: CData) -> jax.Array:
        """[npair] bool: the contact pair had a contact in the last substep."""
        return data.contacts > 0

    def failed(self, data: CData) -> jax.Array:
        finite = jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel))
        return data.failed | ~finite
