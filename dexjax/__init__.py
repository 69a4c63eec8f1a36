"""dexjax: learning dexterous in-hand manipulation with JAX and MuJoCo MJX."""

from dexjax.env import EnvConfig, HandEnv, State, make_env
from dexjax.scene import SceneConfig

__all__ = ["EnvConfig", "HandEnv", "SceneConfig", "State", "make_env"]
__version__ = "0.1.0"
