"""What a run tells its user while it trains: a progress line with an ETA, the steps per second, W&B videos.

Not part of any algorithm. Every script calls `Progress.step` once per env step; it reads the clock every
CHECK_STEPS steps only and never touches the device, so the update path is unchanged.
"""

from __future__ import annotations

import os
import time
from collections import deque

CHECK_STEPS = 10
"""Progress.step reads the clock (and maybe prints) every this many env steps."""
SPS_WINDOW_S = 60.0
"""Steps per second are measured over about the last minute of the current phase (warm-up or learning)."""
ETA_SKIP_STEPS = 100
"""The ETA's clock starts this many steps into the learning phase (of this process), after its first updates: they
compile the losses (seconds to a minute) and would make the first ETAs days long."""
ETA_MIN_S = 30.0
"""No ETA until its clock has run this long: before that it is not an estimate of the learning phase."""


def format_duration(seconds: float) -> str:
    """A short duration for humans: 42s, 12m05s, 3h07m, 2d04h."""
    seconds = max(int(round(seconds)), 0)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{minutes}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{hours}h{minutes % 60:02d}m"
    return f"{days}d{hours % 24:02d}h"


class Progress:
    """Prints `step 12300/1000000 (1.2%)  SPS 25 (last 60s)  ETA 10h58m  train return 1234.5` every `interval_s`
    seconds of wall time (never for 0), and gives the SPS that `charts/SPS` logs.

    SPS is the rate of the current phase over about the last SPS_WINDOW_S seconds, so the fast random warm-up
    never inflates the learning-phase number. The ETA divides the steps left by the learning phase's average
    rate in this process, evaluations and checkpoints included, since they recur at the same share until the end;
    that average starts ETA_SKIP_STEPS steps into the learning phase (after the first updates' compilation), and
    there is no ETA until it has ETA_MIN_S seconds of data.
    """

    def __init__(self, total_steps: int, start_step: int, learning_starts: int, interval_s: float):
        now = time.time()
        self.total_steps, self.learning_starts, self.interval_s = total_steps, learning_starts, interval_s
        self.start_time = now
        self.samples = deque([(now, start_step)])  # (time, step), about a second apart, of the current phase
        self.learning_start = (now, start_step) if start_step >= learning_starts else None
        self.eta_from_step = max(start_step, learning_starts) + ETA_SKIP_STEPS
        self.eta_start = None  # (time, step) where the ETA's average begins
        self.next_line = now + interval_s
        self.episode_return = None

    def record_return(self, episodic_return) -> None:
        """The latest training episode's return, shown in the next progress line."""
        self.episode_return = float(episodic_return)

    def step(self, global_step: int) -> None:
        """Call once per env step, after the step."""
        if global_step % CHECK_STEPS and global_step != self.learning_starts:
            return
        now = time.time()
        if global_step == self.learning_starts:  # the last warm-up step: the learning phase's rate starts here
            self.samples = deque([(now, global_step)])
            self.learning_start = (now, global_step)
        elif now - self.samples[-1][0] >= 1.0:
            self.samples.append((now, global_step))
            while len(self.samples) > 1 and now - self.samples[1][0] >= SPS_WINDOW_S:
                self.samples.popleft()
        if self.eta_start is None and global_step >= self.eta_from_step:
            self.eta_start = (now, global_step)
        if self.interval_s > 0 and now >= self.next_line:
            self.next_line = now + self.interval_s
            print(self.line(global_step, now), flush=True)

    def sps(self, global_step: int) -> int:
        """Steps per second of the current phase over about the last SPS_WINDOW_S seconds."""
        then, then_step = self.samples[0]
        return round((global_step - then_step) / max(time.time() - then, 1e-9))

    def line(self, global_step: int, now: float) -> str:
        parts = [f"step {global_step}/{self.total_steps} ({100.0 * global_step / self.total_steps:.1f}%)"]
        if self.learning_start is None:
            parts.append(f"warm-up SPS {self.sps(global_step)}  random actions until step {self.learning_starts}")
        else:
            window = now - self.samples[0][0]
            parts.append(f"SPS {self.sps(global_step)} (last {window:.0f}s)")
            if self.eta_start is not None and now - self.eta_start[0] >= ETA_MIN_S:
                start_time, start_step = self.eta_start
                rate = (global_step - start_step) / max(now - start_time, 1e-9)
                parts[-1] += f"  ETA {format_duration((self.total_steps - global_step) / rate) if rate > 0 else '?'}"
        if self.episode_return is not None:
            parts.append(f"train return {self.episode_return:.1f}")
        return "  ".join(parts)

    def finish(self, run_dir: str) -> None:
        """The run's last line: where its outputs are."""
        print(f"done in {format_duration(time.time() - self.start_time)}: run directory {run_dir}, "
              f"results {os.path.join(run_dir, 'results.json')}", flush=True)


class WandbVideos:
    """Logs each new video file of `folder` (the training env's RecordVideo output) to the W&B run as `videos`.

    Replaces `wandb.init(monitor_gym=True)`, whose patch breaks gymnasium 1.x's RecordVideo. RecordVideo writes an
    episode's file when the next episode starts, so call `log_new` at episode ends and once after `env.close()`.
    """

    def __init__(self, folder: str):
        self.folder = folder
        self.logged = set(self.files())  # a resumed run logged its earlier files already

    def files(self) -> list[str]:
        return sorted(name for name in os.listdir(self.folder) if name.endswith(".mp4")) \
            if os.path.isdir(self.folder) else []

    def log_new(self, global_step: int) -> None:
        import wandb

        for name in self.files():
            if name not in self.logged:
                self.logged.add(name)
                wandb.log({"videos": wandb.Video(os.path.join(self.folder, name)), "global_step": global_step})
