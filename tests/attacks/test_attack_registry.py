"""The attack registry and configs: names, duplicates, unknown options, budgets validated early."""

import pytest

import erasekit
from erasekit.attacks import Attack, AttackConfig, get_attack, list_attacks, register_attack


def test_every_attack_is_registered_and_exported():
    assert {"relearn", "prompt", "inversion", "quantize", "probe"} <= set(list_attacks())
    assert erasekit.list_attacks() == list_attacks()
    assert callable(erasekit.attack)


def test_bad_or_duplicate_names_fail_at_registration():
    with pytest.raises(ValueError, match="already registered"):
        register_attack("quantize")(type("Again", (Attack,), {}))
    with pytest.raises(ValueError, match="lowercase"):
        register_attack("Bad-Name")
    with pytest.raises(ValueError, match="Unknown attack 'nope'"):
        get_attack("nope")


def test_configs_refuse_unknown_options_and_bad_budgets():
    with pytest.raises(ValueError, match="Unknown option 'stepz'"):
        get_attack("prompt").config_class.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="schedule"):
        get_attack("relearn").config_class.from_dict({"schedule": [0, -5]})
    with pytest.raises(ValueError, match="int4"):
        get_attack("quantize").config_class.from_dict({"formats": ["int4"]})
    cfg = get_attack("relearn").config_class.from_dict({"schedule": [25, 0, 10]})
    assert cfg.schedule == [0, 10, 25]
    assert isinstance(cfg, AttackConfig) and "lr" in cfg.to_dict()
