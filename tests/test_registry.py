"""``get_env`` by import path (``"package.module:factory"``) and its refusals.

The factories live in ``tests/env_factories.py``, a module outside distill_jax,
as a user's own task would. Nothing here compiles.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

from distill_jax.envs import get_env
from distill_jax.envs.base import Env
from distill_jax.envs.cartpole import Cartpole
from distill_jax.envs.wrappers import TimeLimit


@pytest.fixture
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parent))
    yield
    sys.modules.pop("env_factories", None)


def test_import_path_builds_the_env_with_the_overrides(on_path):
    env = get_env("env_factories:make_bare_cartpole", episode_length=7, fall_angle=0.5)
    assert isinstance(env, TimeLimit) and isinstance(env.unwrapped, Cartpole)
    assert env.episode_length == 7
    assert env.unwrapped.config.fall_angle == 0.5
    # Only what the factory built: no randomisation, noise or history from the registry's stack.
    assert [w["type"] for w in env.fingerprint()["wrappers"]] == ["TimeLimit"]
    assert "history" not in env.schema.all_fields


def test_import_path_passes_the_factorys_own_refusals_through(on_path):
    with pytest.raises(ValueError, match="unknown Cartpole setting.*'no_such_setting'"):
        get_env("env_factories:make_bare_cartpole", no_such_setting=1)


def test_import_path_refusals_name_the_module_or_attribute(on_path):
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_for_distill'"):
        get_env("no_such_module_for_distill:make")
    with pytest.raises(ValueError, match="module 'env_factories' has no attribute 'make_nothing'"):
        get_env("env_factories:make_nothing")
    with pytest.raises(ValueError, match=r"'env_factories:NOT_A_FUNCTION' is not callable \(int 3\)"):
        get_env("env_factories:NOT_A_FUNCTION")
    with pytest.raises(ValueError, match="'env_factories:make_a_dict'.*returned a dict, not a distill_jax"):
        get_env("env_factories:make_a_dict", a=1)
    with pytest.raises(ValueError, match="must look like 'package.module:factory'"):
        get_env("env_factories:")


def test_unknown_name_mentions_the_import_path_form():
    with pytest.raises(ValueError, match=r"unknown environment 'nope'; valid names: \[.*'cartpole'.*\], "
                                         r"or an import path 'package.module:factory'"):
        get_env("nope")


def test_registered_names_still_resolve():
    env = get_env("cartpole", history_length=0)
    assert isinstance(env, Env) and env.name == "cartpole"


def test_history_for_teacher_must_be_a_bool_and_is_named_when_not():
    from distill_jax.envs import get_env

    with pytest.raises(ValueError, match=r"teacher_reads \(the history_for_teacher override\) must be true or false, got 'no'"):
        get_env("cartpole_hidden", history_for_teacher="no")
    assert get_env("cartpole", history_for_teacher=False).schema.teacher_ignores == ("history",)
