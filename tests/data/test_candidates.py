"""The candidate pool file (candidates.npz): written and read back exactly; anything else is a
ValueError naming the file."""

from __future__ import annotations

import numpy as np
import pytest

from policy_sampler.data.candidates import load_candidates, write_candidates
from policy_sampler.study.pool import expert_episodes


def test_round_trip_and_bad_files(tmp_path):
    episodes = expert_episodes("PolicySampler/ObstacleReach-v0", [3, 4])
    path = write_candidates(episodes, tmp_path / "pool" / "candidates.npz", {"task": "reach"})
    back = load_candidates(path)
    assert [e.seed for e in back] == [3, 4] and [e.expert_seed for e in back] == [-1, -1]
    for a, b in zip(episodes, back):
        for key in ("observations", "next_observations", "actions", "rewards"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert (a.success, a.terminated, a.truncated) == (b.success, b.terminated, b.truncated)
    with pytest.raises(ValueError, match="no candidate episodes"):
        write_candidates([], tmp_path / "empty.npz")
    (tmp_path / "text.npz").write_text("not a pool")
    np.savez(tmp_path / "other.npz", meta=np.asarray('{"format": "something else"}'))
    for name in ("text.npz", "other.npz", "missing.npz"):
        with pytest.raises(ValueError, match=name):
            load_candidates(tmp_path / name)
