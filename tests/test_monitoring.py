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
    # ETA: 7500 steps left at the learning phase's average from its 100th step (1100, at 11 s: the first updates
    # compile), 1400 steps in 190 s, = 1017.9 s
    assert progress.line(2_500, clock.now) == \
        "step 2500/10000 (25.0%)  SPS 5 (last 60s)  ETA 16m58s  train return -12.5"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6  # one every 30 s of the 201 s
    assert all(line.startswith("step ") for line in lines)
    assert "ETA" not in lines[0] and all("ETA" in line for line in lines[1:])  # 19 s of ETA clock at 30 s: none


def test_no_eta_while_the_first_updates_compile(monkeypatch):
    """A 60 s compile in the first learning step makes no ETA of days: the ETA's clock starts after it."""
    clock = Clock()
    monkeypatch.setattr(monitoring.time, "time", clock)
    progress = Progress(total_steps=100_000, start_step=0, learning_starts=1_000, interval_s=0)
    for step in range(1, 1_301):
        clock.now += 0.001 if step <= 1_000 else 60.0 if step == 1_001 else 0.05  # then 20 steps/s
        progress.step(step)
        if step == 1_050:
            assert "ETA" not in progress.line(step, clock.now)
    assert "ETA" not in progress.line(1_300, clock.now)  # its clock started at step 1100: 10 s of it, under 30 s
    for step in range(1_301, 1_801):
        clock.now += 0.05
        progress.step(step)
    # from step 1100: 700 steps in 35 s, 20 steps/s; 98,200 steps left = 4910 s (an average since step 1000 would
    # say 8.6 steps/s and 3h10m, one from the first update days)
    assert progress.line(1_800, clock.now).endswith("ETA 1h21m")


def test_warm_up_lines_have_no_eta_and_a_resumed_run_starts_in_the_learning_phase(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(monitoring.time, "time", clock)
    progress = Progress(total_steps=5_000, start_step=0, learning_starts=1_000, interval_s=0)
    clock.now += 2.0
    assert progress.line(500, clock.now) == "step 500/5000 (10.0%)  warm-up SPS 250  random actions until step 1000"
    resumed = Progress(total_steps=5_000, start_step=3_000, learning_starts=1_000, interval_s=0)
    for step in range(3_001, 3_201):
        clock.now += 0.5
        resumed.step(step)
    assert resumed.sps(3_200) == 2
    assert resumed.line(3_200, clock.now).endswith("SPS 2 (last 60s)  ETA 15m00s")  # its clock from step 3100


def test_zero_interval_prints_nothing_and_finish_names_the_outputs(monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(monitoring.time, "time", clock)
    progress = Progress(total_steps=100, start_step=0, learning_starts=10, interval_s=0)
    for step in range(1, 101):
        clock.now += 1.0
        progress.step(step)
    progress.finish("runs/x")
    assert capsys.readouterr().out == "done in 1m40s: run directory runs/x, results runs/x/results.json\n"
