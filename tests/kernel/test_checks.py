"""ragkit.checks: one wording for every component's argument errors, each naming the field."""

from __future__ import annotations

import math

import pytest

from ragkit.checks import check_bool, check_choice, check_float, check_int
from ragkit.errors import ConfigError


def error(fn, *args, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kw)
    return str(info.value)


def test_check_int():
    assert check_int(3, "k", min=1) == 3
    assert check_int(None, "k", min=1, null=True) is None
    assert error(check_int, 0, "k", min=1) == "k: must be an int >= 1; got 0"
    assert error(check_int, True, "k", min=0) == "k: must be an int >= 0; got True"
    assert error(check_int, 2.0, "k") == "k: must be an int; got 2.0"
    assert error(check_int, None, "k", min=1) == "k: must be an int >= 1; got None"
    assert error(check_int, 9, "n", min=1, max=8) == "n: must be an int in [1, 8]; got 9"
    assert (error(check_int, -1, "overlap", min=0, null=True, hint="sentences")
            == "overlap: must be an int >= 0 or null (sentences); got -1")


def test_check_float():
    assert check_float(1, "x", min=0.0) == 1.0 and isinstance(check_float(1, "x"), float)
    assert check_float(None, "x", null=True) is None
    assert error(check_float, 2, "lambda_", min=0.0, max=1.0) == (
        "lambda_: must be a number in [0.0, 1.0]; got 2")
    for bad in (math.nan, math.inf, False, "1"):
        assert error(check_float, bad, "t", min=0.0, max=math.inf).startswith(
            "t: must be a number in [0.0, inf]; got ")


def test_check_bool_and_choice():
    assert check_bool(False, "flag") is False
    assert error(check_bool, 1, "flag") == "flag: must be true or false; got 1"
    assert check_choice("a", "mode", ("a", "b")) == "a"
    assert error(check_choice, "c", "mode", ("a", "b"), what="mode") == (
        "mode: unknown mode 'c'; choose one of a, b")
    assert error(check_choice, True, "n", (1, 2)) == "n: unknown value True; choose one of 1, 2"
