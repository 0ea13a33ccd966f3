"""benchmark/reproduction/queue.py's choice of the next run: the campaign's entries, a run's progress read off its
log, and the fit against the working session's end, on hand-written logs with known step counts."""

import sys
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark.reproduction import queue  # noqa: E402

LL = "LunarLanderContinuous-v3"


def write_log(out: Path, item: dict, step: int, total: int) -> None:
    logs = queue.run_out(item, out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{queue.run_name(item)}.log").write_text(
        "step 12/34 (35.3%)  SPS 4 (last 60s)  ETA 1h  train return -1.0\n"
        f"step {step}/{total} ({100 * step / total:.1f}%)  SPS 50 (last 61s)  ETA 1h  train return 3.0\n"
        "SIGTERM: stopped at step 99; checkpoint saved\n")


def test_the_campaign_is_18_lunarlander_runs_and_6_pendulum_reruns_each_once():
    items = queue.entries()
    names = [queue.run_name(item) for item in items]
    assert len(names) == len(set(names)) == 24
    lunarlander = [item for item in items if item["env"] == LL]
    assert {(item["script"], item["seed"]) for item in lunarlander} == {
        (script, seed) for script in ("td3_continuous", "td3_pave_continuous", "td3_caps_continuous", "sac_continuous",
                                      "sac_pave_continuous", "sac_caps_continuous") for seed in queue.SEEDS}
    assert all(item["flags"] == queue.DURING_TRAINING for item in lunarlander
               if item["script"] in ("td3_continuous", "td3_pave_continuous"))
    assert all(not item["flags"] for item in items if item["script"] not in ("td3_continuous", "td3_pave_continuous")
               or item["env"] != LL)
    # every cell shorter than a working session gets its first seed before any cell's third seed
    first = [names.index(f"{LL}__{script}__178132") for script in ("td3_continuous", "sac_continuous",
                                                                     "sac_pave_continuous")]
    third = [index for index, item in enumerate(items) if item["seed"] == 922852]
    assert max(first) < min(third)
    assert all((item["env"], item["script"]) in queue.HOURS for item in items)


def test_progress_is_the_last_progress_line_of_the_runs_log(tmp_path):
    item = queue.entries()[0]
    assert queue.progress(item, tmp_path) is None
    write_log(tmp_path, item, 125000, 500000)
    assert queue.progress(item, tmp_path) == 0.25
    hours = queue.HOURS[item["env"], item["script"]]
    assert queue.hours_left(item, tmp_path) == pytest.approx(0.75 * hours)


def test_the_next_run_is_the_longest_that_fits_before_the_sessions_end_one_under_way_first(tmp_path):
    sac = queue.entry(LL, "sac_continuous", 922852, "lunarlander")       # 0.9 h
    sac_caps = queue.entry(LL, "sac_caps_continuous", 922852, "lunarlander")  # 1.4 h
    td3 = queue.entry(LL, "td3_continuous", 922852, "lunarlander")       # 2.3 h
    td3_pave = queue.entry(LL, "td3_pave_continuous", 178132, "lunarlander")  # 7 h
    pending = [sac, sac_caps, td3, td3_pave]
    assert queue.pick(pending, tmp_path, None) is sac                      # no session end: in order
    assert queue.pick(pending, tmp_path, 3.0) is td3                       # the longest that fits
    assert queue.pick(pending, tmp_path, 2.4) is sac_caps                  # td3 fits only without the 10% margin
    assert queue.pick(pending, tmp_path, 1.0) is sac
    assert queue.pick(pending, tmp_path, 0.95) is sac                      # nothing fits with the margin: the first
    sac_again = queue.entry(LL, "sac_continuous", 410580, "lunarlander")   # 0.9 h too, later in the order
    pendulum = queue.entry("Pendulum-v1", "td3_continuous", 410580, "pendulum", out="pendulum_rerun")  # 0.45 h, first in the list
    assert queue.pick([pendulum, sac, sac_again], tmp_path, 1.0) is sac   # of the longest equals, the first
    write_log(tmp_path, td3_pave, 450000, 500000)                          # 0.7 h left
    assert queue.pick(pending, tmp_path, 3.0) is td3_pave                  # under way and fits: before td3
    assert queue.pick(pending, tmp_path, 0.5) is td3_pave                  # nothing fits: the one under way
    write_log(tmp_path, td3_pave, 50000, 500000)                           # 6.3 h left
    assert queue.pick(pending, tmp_path, 1.0) is sac


def test_until_is_the_next_such_time_of_day_and_bad_input_says_so():
    now = datetime(2026, 12, 2, 18, 0)
    assert queue.deadline("17:35", now) == datetime(2026, 12, 3, 17, 35)
    assert queue.deadline("18:30", now) == datetime(2026, 12, 2, 18, 30)
    assert queue.deadline(None, now) is None
    with pytest.raises(SystemExit, match="HH:MM"):
        queue.deadline("half past five", now)


def test_a_checkout_without_the_runner_is_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no benchmark/run.py"):
        queue.main(["--out", str(tmp_path), "--checkout", str(tmp_path), "--dry-run"])
