"""The one set of setting checks every layer uses: each names the setting and what it got."""

import math

import numpy as np
import pytest

from policy_sampler.validation import check_bool, check_choice, check_int, check_number, is_int


def test_integers():
    assert check_int("n", 3, minimum=1) == 3 and check_int("n", np.int64(4)) == 4
    assert check_int("n", None, allow_none=True) is None
    assert is_int(5) and not is_int(True) and not is_int(5.0)
    for bad in (True, 2.0, "3", None, 0, 11):
        with pytest.raises(ValueError, match=r"^n must be an integer in \[1, 10\], got"):
            check_int("n", bad, minimum=1, maximum=10)


def test_numbers():
    assert check_number("lr", 1e-4, positive=True) == 1e-4 and check_number("x", 3) == 3.0
    assert check_number("x", math.inf, finite=False) == math.inf
    for bad in (math.nan, math.inf, -1.0, 0.0, False, "1"):
        with pytest.raises(ValueError, match="^tolerance must be a positive finite number, got"):
            check_number("tolerance", bad, positive=True)
    with pytest.raises(ValueError, match=r"x must be a finite number >= 0 or None"):
        check_number("x", -0.5, minimum=0, allow_none=True)


def test_bools_and_choices():
    assert check_bool("flag", np.bool_(True)) is True
    with pytest.raises(ValueError, match="flag must be True or False, got 'yes'"):
        check_bool("flag", "yes")
    assert check_choice("mode", "rtc", ("none", "rtc")) == "rtc"
    with pytest.raises(ValueError, match=r"mode must be one of \['none', 'rtc'\], got 'blend'"):
        check_choice("mode", "blend", ("none", "rtc"))
    with pytest.raises(ValueError, match="mode must be one of"):
        check_choice("mode", ["rtc"], {"none", "rtc"})  # unhashable
