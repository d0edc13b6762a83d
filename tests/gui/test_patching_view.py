"""The patching view: the maps it draws and the line it says, for runs far apart and nearly equal."""

import numpy as np
import pytest

from opt_desktop.engine.messages.results import Patching
from opt_desktop.gui.widgets.patching_view import PatchingView


@pytest.fixture
def view(qtbot):
    v = PatchingView()
    qtbot.addWidget(v)
    v.resize(900, 600)
    v.show()
    return v


def _patching(clean_prob, corrupt_prob, cells):
    prob = np.full((3, 3), corrupt_prob, np.float32)
    prob[2, 1:] = cells
    return Patching(clean_ids=np.array([2, 5, 6]), corrupt_ids=np.array([2, 5, 7]), target_id=16,
                    clean_prob=clean_prob, corrupt_prob=corrupt_prob, prob=prob,
                    head_prob=np.full((2, 2), corrupt_prob, np.float32))


def colorbar_label(heatmap) -> str:
    return heatmap.colorbar.getAxis("left").labelText


def test_near_equal_runs_are_said_to_be_too_close_and_mapped_as_a_change_in_p(view):
    # Issue 23: "The return value / type of the function", " is": 0.05095 and 0.05133.
    view.set_result(_patching(0.05095, 0.05133, [0.04468, 0.057505]), ["</s>", "The", " value"], " is")
    status = view.status.text()
    assert "too close to normalise" in status and "0.05095 and 0.05133" in status
    shown = view.residual.data()
    assert np.nanmax(np.abs(shown)) < 0.01  # not the 17.50 and -16.25 of a ratio that explodes
    assert shown[2, 1] == pytest.approx(0.04468 - 0.05133, abs=1e-6)
    assert colorbar_label(view.residual) == colorbar_label(view.head_map) == "p − corrupted"
    assert "p − corrupted -0.00665" in view.residual.describe(2, 1)
    lo, hi = view.residual.colorbar.levels()
    assert lo == pytest.approx(-hi) and hi == pytest.approx(0.05133 - 0.04468, rel=1e-3)  # the largest change


def test_runs_far_apart_are_mapped_as_recovered(view):
    view.set_result(_patching(0.4, 0.05, [0.4, 0.225]), ["</s>", "The", " Eiffel"], " Paris")
    assert "too close" not in view.status.text()
    np.testing.assert_allclose(view.residual.data()[2, 1:], [1.0, 0.5], atol=1e-6)
    assert colorbar_label(view.residual).startswith("recovered")
    assert view.residual.colorbar.levels() == (0.0, 1.0)
    assert "recovered 0.5" in view.residual.describe(2, 2)
