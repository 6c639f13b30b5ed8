"""Typed TOML configs with validated --set overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from common.config import ConfigError, load_config, parse_overrides, parse_value


@dataclass
class Demo:
    variant: str = "mean"
    lr: float = 1e-3
    epochs: int = 3
    amp: bool = False
    splits: list[str] | None = None
    head_kwargs: dict[str, Any] = field(default_factory=dict)


def test_values_are_toml_never_code():
    assert parse_value("3e-4") == 3e-4 and parse_value("true") is True and parse_value("scalar") == "scalar"
    assert parse_value('["train", "dev"]') == ["train", "dev"]
    assert parse_value("__import__('os').system('true')") == "__import__('os').system('true')"  # a plain string


def test_file_then_flags_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('variant = "scalar"\nlr = 0.01\nepochs = 7\n[head_kwargs]\nhidden_dim = 16\n')
    config = load_config(Demo, path, parse_overrides(["lr=1", "amp=true"]), epochs=9)
    assert config == Demo(variant="scalar", lr=1.0, epochs=9, amp=True, head_kwargs={"hidden_dim": 16})
    assert isinstance(config.lr, float)


@pytest.mark.parametrize(
    "pair, message",
    [("lrr=1", "unknown key.*valid keys: amp, epochs, head_kwargs, lr, splits, variant"), ("epochs=1.5", "epochs: expected int"),
     ("amp=1", "amp: expected true or false"), ("lr", "expected key=value"), ("epochs=true", "expected a number"),
     ("splits=3", "expected a list"), ("head_kwargs=3", "expected a table")],
)
def test_bad_overrides_name_the_problem(pair, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Demo, None, parse_overrides([pair]))


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Demo, tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("variant = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(Demo, tmp_path / "bad.toml")


def test_nested_settings_are_bound_to_the_signature_they_configure():
    from common.config import check_arguments

    class Head:
        def __init__(self, in_dim: int, size: int = 4, rate: float = 0.5, flag: bool = False, *, name: str = "x"):
            pass

    assert check_arguments(Head, {"size": 8, "rate": 1}, "head_kwargs", skip=("in_dim",)) == {"size": 8, "rate": 1.0}
    with pytest.raises(ConfigError, match=r"^head_kwargs: unknown key\(s\) in_dim, sise; valid keys: size, rate, "
                                          r"flag, name$"):
        check_arguments(Head, {"sise": 8, "in_dim": 3}, "head_kwargs", skip=("in_dim",))
    for bad, message in (({"size": 1.5}, "head_kwargs.size: expected int, got 1.5"),
                         ({"flag": 1}, "head_kwargs.flag: expected true or false, got 1"),
                         ({"name": 3}, "head_kwargs.name: expected str, got 3")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_arguments(Head, bad, "head_kwargs")
    with pytest.raises(ConfigError, match="expected a table"):
        check_arguments(Head, [1], "head_kwargs")
