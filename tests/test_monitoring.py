"""The progress line, its windowed SPS and ETA on a clock the test drives, and the duration format."""

import pytest

from cleanrl_pave import monitoring
from cleanrl_pave.monitoring import Progress, format_duration


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (59.6, "1m00s"), (725, "12m05s"),
                                           (3 * 3600 + 7 * 60 + 20, "3h07m"), (2 * 86400 + 4 * 3600 + 59, "2d04h")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self):
        return self.now


def test_sps_is_the_learning_phase_rate_over_the_last_minute_and_eta_the_phase_average(monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(monitoring.time, "time", clock)
    progress = Progress(total_steps=10_000, start_step=0, learning_starts=1_000, interval_s=30.0)
    start = clock.now
    # warm-up: 1000 steps at 1000 steps/s; learning: 1000 steps at 10 steps/s, then 500 steps at 5 steps/s
    for step in range(1, 2_501):
        clock.now = start + (step / 1000 if step <= 1000 else 1 + (step - 1000) / 10 if step <= 2000
                             else 101 + (step - 2000) / 5)
        if step == 1_500:
            progress.record_return(-12.5)
        progress.step(step)
        if step == 2_000:
            assert progress.sps(step) == 10  # the fast warm-up counts nowhere
    assert progress.sps(2_500) == 5  # the last minute ran at 5 steps/s (a whole-run average would say 12)
    # ETA: 7500 steps left at the learning phase's average, 1500 steps in 200 s, = 1000 s
    assert progress.line(2_500, clock.now) == \
        "step 2500/10000 (25.0%)  SPS 5 (last 60s)  ETA 16m40s  train return -12.5"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6  # one every 30 s of the 201 s
    assert lines[0].startswith("step ") and "ETA" in lines[0] and all(line.startswith("step ") for line in lines)


def test_warm_up_lines_have_no_eta_and_a_resumed_run_starts_in_the_learning_phase(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(monitoring.time, "time", clock)
    progress = Progress(total_steps=5_000, start_step=0, learning_starts=1_000, interval_s=0)
    clock.now += 2.0
    assert progress.line(500, clock.now) == "step 500/5000 (10.0%)  warm-up SPS 250  random actions until step 1000"
    resumed = Progress(total_steps=5_000, start_step=3_000, learning_starts=1_000, interval_s=0)
    for step in range(3_001, 3_101):
        clock.now += 0.5
        resumed.step(step)
    assert resumed.sps(3_100) == 2
    assert resumed.line(3_100, clock.now).endswith("SPS 2 (last 50s)  ETA 15m50s")


def test_zero_interval_prints_nothing_and_finish_names_the_outputs(monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(monitoring.time, "time", clock)
    progress = Progress(total_steps=100, start_step=0, learning_starts=10, interval_s=0)
    for step in range(1, 101):
        clock.now += 1.0
        progress.step(step)
    progress.finish("runs/x")
    assert capsys.readouterr().out == "done in 1m40s: run directory runs/x, results runs/x/results.json\n"
