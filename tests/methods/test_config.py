import dataclasses

import pytest

import erasekit
from erasekit.methods import MethodConfig, option, register_method
from erasekit.methods.base import EraseMethod
from erasekit.methods.esd import ESDConfig


def test_overrides_parse_yaml_scalars_and_lists():
    cfg = ESDConfig().with_overrides(["steps=2", "lr=2e-5", "variant=u", "target=[unet, -xattn]"])
    assert cfg.steps == 2 and cfg.lr == 2e-5 and cfg.variant == "u" and cfg.target == ["unet", "-xattn"]


def test_int_accepted_for_float():
    assert ESDConfig().with_overrides(["lr=1"]).lr == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stpes=2", "Did you mean 'steps'"),
        ("steps=abc", "steps must be int"),
        ("steps=0", "positive integer"),
        ("variant=z", "variant must be one of"),
        ("lr=-1", "lr must be > 0"),
        ("steps", "not key=value"),
    ],
)
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ValueError, match=message):
        ESDConfig().with_overrides([override])


def test_yaml_unknown_key_and_wrong_method(tmp_path):
    (tmp_path / "a.yaml").write_text("steps: 3\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match="Unknown option 'learning_rate'"):
        erasekit.resolve_config("esd", tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("method: salun\nsteps: 3\n")
    with pytest.raises(ValueError, match="for method 'salun'"):
        erasekit.resolve_config("esd", tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("method: esd\nsteps: 3\n")
    assert erasekit.resolve_config("esd", tmp_path / "c.yaml").steps == 3


def test_unknown_method_lists_choices():
    with pytest.raises(ValueError, match="Unknown method 'esdx'.*esd"):
        erasekit.get_method("esdx")


def test_registration_is_validated_at_import():
    @dataclasses.dataclass
    class NoHelp(MethodConfig):
        undocumented: int = 1

    class Bad(EraseMethod):
        config_class = NoHelp

    with pytest.raises(TypeError, match="lack help text.*undocumented"):
        register_method("test_nohelp")(Bad)
    with pytest.raises(ValueError, match="already registered"):
        register_method("esd")(Bad)
    with pytest.raises(ValueError, match="lowercase"):
        register_method("Bad Name")
    with pytest.raises(TypeError, match="EraseMethod subclass"):
        register_method("test_notamethod")(int)
    assert "test_nohelp" not in erasekit.list_methods()


def test_every_option_has_help_text_and_help_lists_it():
    @dataclasses.dataclass
    class Ok(MethodConfig):
        extra: float = option(0.5, "an extra knob")

    assert "extra = 0.5" in Ok.help_text() and "an extra knob" in Ok.help_text()
