"""Run configs: presets, `--set` overrides and the JSON form a run directory keeps."""

import dataclasses

import pytest

from dexjax import config as config_lib


@pytest.mark.parametrize("name", sorted(config_lib.PRESETS))
def test_every_preset_survives_json(name):
    config = config_lib.preset(name)
    assert config_lib.from_json(config_lib.to_json(config)) == config


def test_paper_preset_has_the_papers_numbers():
    config = config_lib.preset("paper")
    net, ppo = config.train.network, config.train.ppo
    assert (net.hidden, net.lstm, net.action_bins) == (1024, 512, 11)
    assert (ppo.gamma, ppo.gae_lambda, ppo.clip, ppo.entropy_coef, ppo.lr) == (
        0.998,
        0.95,
        0.2,
        0.01,
        3e-4,
    )
    assert config.train.rollout_length == 10
    assert config.env.goal_distribution == "uniform" and not config.env.locked_wrist
    assert config.env.randomization.physics.enabled


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown preset 'fast'.*cpu.*gpu.*paper.*smoke"):
        config_lib.preset("fast")


def test_override_parses_by_the_fields_type():
    config = config_lib.override(
        config_lib.preset("cpu"),
        [
            "train.num_envs=64",
            "train.ppo.lr=1e-4",
            "env.goal_distribution=uniform",
            "env.locked_wrist=false",
            "env.randomization.physics.mass=0.25, 4",
            "total_env_steps=2_000",
        ],
    )
    assert config.train.num_envs == 64
    assert config.train.ppo.lr == 1e-4
    assert config.env.goal_distribution == "uniform"
    assert config.env.locked_wrist is False
    assert config.env.randomization.physics.mass == (0.25, 4.0)
    assert config.total_env_steps == 2000
    # The rest is untouched.
    base = config_lib.preset("cpu")
    assert config.train.network == base.train.network
    assert config.env.randomization.observation == base.env.randomization.observation


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown config key 'train\.num_env'.*train\.num_envs"):
        config_lib.override(config_lib.preset("cpu"), ["train.num_env=3"])
    with pytest.raises(ValueError, match=r"unknown config key 'trian\.x'.*valid keys at the top"):
        config_lib.override(config_lib.preset("cpu"), ["trian.x=3"])


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("train.num_envs=lots", "train.num_envs takes an integer, got 'lots'"),
        ("train.num_envs=6.5", "takes an integer"),
        ("train.ppo.lr=fast", "train.ppo.lr takes a number"),
        ("env.locked_wrist=maybe", "takes a boolean"),
        ("env.randomization.physics.mass=2", "takes 2 comma-separated values"),
        ("train.ppo=3", "is a group"),
        ("train.num_envs.x=3", "is a value, not a group"),
        ("train.num_envs", "must look like group.field=value"),
    ],
)
def test_bad_override_values_are_clear_errors(assignment, message):
    with pytest.raises(ValueError, match=message):
        config_lib.override(config_lib.preset("cpu"), [assignment])


def test_overrides_are_validated_by_the_configs_themselves():
    with pytest.raises(ValueError, match="unknown goal_distribution 'sideways'"):
        config_lib.override(config_lib.preset("cpu"), ["env.goal_distribution=sideways"])
    with pytest.raises(ValueError, match="num_envs must be divisible by num_minibatches"):
        config_lib.override(config_lib.preset("cpu"), ["train.num_envs=31"])
    with pytest.raises(ValueError, match="action_bins"):
        config_lib.override(config_lib.preset("cpu"), ["env.action_bins=0"])


def test_updates_cover_the_requested_steps_in_whole_chunks():
    config = config_lib.preset("cpu")
    per_chunk = config.train.steps_per_update * config.train.updates_per_chunk
    config = dataclasses.replace(config, total_env_steps=per_chunk + 1)
    assert config.updates == 2 * config.train.updates_per_chunk
    config = dataclasses.replace(config, total_env_steps=per_chunk)
    assert config.updates == config.train.updates_per_chunk


def test_from_dict_rejects_unknown_keys_and_keeps_missing_ones():
    data = config_lib.to_dict(config_lib.preset("smoke"))
    del data["train"]["ppo"]["lr"]  # a config written before a field existed
    assert config_lib.from_dict(data).train.ppo.lr == config_lib.RunConfig().train.ppo.lr
    data["train"]["warp_speed"] = 9
    with pytest.raises(ValueError, match="unknown config keys at train.*warp_speed"):
        config_lib.from_dict(data)
