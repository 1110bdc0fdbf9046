"""refssm.surrogate: each derivative is the numerical derivative of its smooth primitive."""

import numpy as np
import pytest

from refssm import surrogate

PARAMS = [("triangle", {}), ("triangle", {"width": 0.5}), ("fast_sigmoid", {}), ("fast_sigmoid", {"slope": 2.0}),
          ("sigmoid", {}), ("sigmoid", {"alpha": 25.0}), ("atan", {}), ("atan", {"alpha": 0.5}),
          ("rectangle", {}), ("rectangle", {"width": 0.3}), ("straight_through", {})]


def _kinks(name, params):
    w = params.get("width", 1.0)
    return {"triangle": [-w, 0.0, w], "fast_sigmoid": [0.0], "rectangle": [-w / 2, w / 2],
            "straight_through": [0.0, 1.0]}.get(name, [])


@pytest.mark.parametrize("name, params", PARAMS)
def test_grad_is_derivative_of_primitive(name, params):
    sg = surrogate.get(name, **params)
    z = np.linspace(-2.5, 2.5, 1001)
    h = 1e-6
    away = np.all(np.abs(z[:, None] - np.array(_kinks(name, params) + [np.inf])) > 10 * h, axis=1)
    numeric = (sg.primitive(z + h) - sg.primitive(z - h)) / (2 * h)
    np.testing.assert_allclose(sg.grad(z)[away], numeric[away], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name, params", [p for p in PARAMS if p[0] != "straight_through"])
def test_primitive_is_a_smoothed_step(name, params):
    # sigma rises from 0 to 1 (fast_sigmoid: from -1/k to 1/k, its integral is 2/k) and is monotone
    sg = surrogate.get(name, **params)
    z = np.linspace(-200, 200, 40001)
    f = sg.primitive(z)
    assert np.all(np.diff(f) >= -1e-15)
    expected = 2 / sg.params["slope"] if name == "fast_sigmoid" else 1.0
    assert abs((f[-1] - f[0]) - expected) < 0.02 * expected


def test_closed_forms_at_points():
    # values written from the formulas in the papers / libraries, not from the code
    assert surrogate.get("triangle").grad(np.array([0.0, 0.5, 1.5])).tolist() == [1.0, 0.5, 0.0]
    np.testing.assert_allclose(surrogate.get("fast_sigmoid").grad(np.array([0.0, 0.04])), [1.0, 0.25])
    np.testing.assert_allclose(surrogate.get("sigmoid").grad(np.array([0.0])), [1.0])        # 4 * 1/4
    np.testing.assert_allclose(surrogate.get("atan").grad(np.array([0.0, 1 / np.pi])), [1.0, 0.5])
    np.testing.assert_allclose(surrogate.get("rectangle", width=0.5).grad(np.array([0.2, 0.3])), [2.0, 0.0])
    assert surrogate.get("straight_through").grad(np.array([-0.1, 0.0, 0.5, 1.0, 1.1])).tolist() == [0, 1, 1, 1, 0]


def test_forward_is_heaviside_with_convention():
    z = np.array([-1.0, 0.0, 1e-300, 2.0])
    assert surrogate.get("atan").forward(z).tolist() == [0, 1, 1, 1]
    assert surrogate.get("atan", fire_at_equality=False).forward(z).tolist() == [0, 0, 1, 1]


def test_sigmoid_does_not_overflow():
    g = surrogate.get("sigmoid", alpha=100.0).grad(np.array([-1e3, 1e3]))
    assert np.all(np.isfinite(g)) and np.all(g == 0)


@pytest.mark.parametrize("call, match", [
    (lambda: surrogate.get("superspike"), "name"),
    (lambda: surrogate.get("triangle", width=0.0), "width"),
    (lambda: surrogate.get("fast_sigmoid", slope=-1.0), "slope"),
    (lambda: surrogate.get("atan", slope=2.0), "slope"),
    (lambda: surrogate.get("atan").grad([np.nan]), "z"),
])
def test_bad_input_raises_value_error_naming_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
