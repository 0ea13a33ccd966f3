"""The smoothness score against independently computed signals, and the evaluation routine on a real env."""

import math

import gymnasium as gym
import numpy as np
import pytest

from cleanrl_pave.evaluation import evaluate, mean_action_change, smoothness_score


def naive_score(signal_1d: np.ndarray) -> float:
    """sm of one dim with an explicit O(T^2) DFT: 2 / T^2 * sum_{k < floor(T/2)} k |Y_k|."""
    num_steps = len(signal_1d)
    total = 0.0
    for k in range(num_steps // 2):
        real = sum(x * math.cos(2 * math.pi * k * t / num_steps) for t, x in enumerate(signal_1d))
        imag = sum(-x * math.sin(2 * math.pi * k * t / num_steps) for t, x in enumerate(signal_1d))
        total += k * math.hypot(real, imag)
    return 2.0 * total / num_steps**2


def test_spec_check_value_sine_of_100_periods_in_1000_steps():
    t = np.arange(1000)
    assert smoothness_score(np.sin(2 * np.pi * 100 * t / 1000)) == pytest.approx(0.1, abs=1e-12)


@pytest.mark.parametrize("num_steps", [200, 201, 999, 1000])
@pytest.mark.parametrize("periods", [1, 7, 40])
def test_sine_scores_amplitude_times_frequency_over_length(num_steps, periods):
    # a whole number of periods puts all energy in bin `periods`, |Y| = A T / 2, so sm = A * periods / T
    amplitude = 1.7
    t = np.arange(num_steps)
    score = smoothness_score(amplitude * np.sin(2 * np.pi * periods * t / num_steps))
    assert score == pytest.approx(amplitude * periods / num_steps, rel=1e-9)


def test_constant_signal_scores_zero():
    assert smoothness_score(np.full((500, 3), 0.7)) == pytest.approx(0.0, abs=1e-12)


def test_saturated_and_step_by_step_bang_bang_actions_score_zero_but_not_in_action_change():
    # README, Evaluation and smoothness: sm misses a policy that sits at a bound (a constant) and one that flips
    # between the bounds every step (all its energy is in the Nyquist bin k = T/2, which the sum leaves out);
    # the mean action change tells them apart (0 and 2 * 2)
    saturated, alternating = np.full(200, 2.0), 2.0 * (-1.0) ** np.arange(200)
    assert smoothness_score(saturated) == pytest.approx(0.0, abs=1e-12)
    assert smoothness_score(alternating) == pytest.approx(0.0, abs=1e-12)
    assert (mean_action_change(saturated), mean_action_change(alternating)) == (0.0, 4.0)
    one_switch = np.where(np.arange(200) < 100, 2.0, -2.0)
    assert smoothness_score(one_switch) == pytest.approx(naive_score(one_switch), rel=1e-9)
    assert smoothness_score(one_switch) == pytest.approx(0.74, abs=0.005)


def test_multi_dimensional_score_is_the_mean_over_dims():
    t = np.arange(1000)
    sine = np.sin(2 * np.pi * 100 * t / 1000)
    assert smoothness_score(np.stack([sine, np.zeros(1000)], axis=1)) == pytest.approx(0.05, abs=1e-12)
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(64, 3))
    expected = np.mean([naive_score(signal[:, dim]) for dim in range(3)])
    assert smoothness_score(signal) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("num_steps", [1, 2, 17, 32, 33])
def test_random_signals_match_an_explicit_dft_for_odd_and_even_lengths(num_steps):
    signal = np.random.default_rng(num_steps).uniform(-2, 2, size=num_steps)
    assert smoothness_score(signal) == pytest.approx(naive_score(signal), rel=1e-9, abs=1e-12)
    assert smoothness_score(signal[:, None]) == smoothness_score(signal)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        smoothness_score(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        smoothness_score(np.zeros((0, 2)))


def test_mean_action_change():
    assert mean_action_change(np.array([[0.0], [1.0], [3.0]])) == pytest.approx(1.5)
    assert mean_action_change(np.array([[5.0, 1.0]])) == 0.0


def test_evaluate_is_reproducible_and_scores_env_scale_actions():
    env = gym.make("Pendulum-v1")

    def policy(obs):
        # full-scale bang-bang on the sign of the angular velocity: env-scale actions of magnitude 2
        return np.array([2.0 if obs[2] > 0 else -2.0])

    first = evaluate(policy, env, episodes=2, seed=123)
    second = evaluate(policy, env, episodes=2, seed=123)
    assert first["returns"] == second["returns"]
    assert first["lengths"] == [200, 200]
    assert first["returns"][0] != first["returns"][1]  # episode i is seeded seed + i
    for actions, score in zip(first["actions"], first["smoothness"]):
        assert np.all(np.abs(actions) == 2.0)
        assert score == pytest.approx(smoothness_score(actions))
    assert first["observations"][0].shape == (200, 3)
