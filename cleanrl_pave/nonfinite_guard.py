"""A NaN/Inf guard for the training losses that never syncs with the host inside the update path.

`check(**losses)` flags the named losses on the device and returns the flag that fused Adam takes as its `found_inf`
input (as under GradScaler), so an update with a non-finite loss is skipped and the networks stay finite.
`stop_message(step, path)` reads the flags, the guard's only host sync, which the scripts call at their logging
interval: it names the losses that went non-finite since the last clean check, or returns None.
"""

from __future__ import annotations

from typing import Optional

import torch


class NonFiniteGuard:
    def __init__(self):
        self.flags: dict[tuple[str, ...], torch.Tensor] = {}  # names of one check -> accumulated non-finite flags
        self.checked_step = 0

    def check(self, **losses: torch.Tensor) -> torch.Tensor:
        """Flag the non-finite ones among these scalar losses; 1.0 (a 0-dim float tensor) if any is, else 0.0."""
        names = tuple(losses)
        nonfinite = ~torch.stack([loss.detach().reshape(()) for loss in losses.values()]).isfinite()
        flags = self.flags.get(names)
        if flags is not None and flags.device == nonfinite.device:
            flags |= nonfinite  # in place: a CUDA graph that records this check accumulates into the same flags
        else:  # the first check of these names, or flags a checkpoint restored on the CPU for a run on a GPU
            self.flags[names] = nonfinite if flags is None else flags.to(nonfinite.device) | nonfinite
        return nonfinite.any().float()

    def state_dict(self) -> dict:
        """The flags not yet read and the last clean step, for a checkpoint taken between two checks."""
        return {"flags": [(list(names), flags) for names, flags in self.flags.items()],
                "checked_step": self.checked_step}

    def load_state_dict(self, state: dict) -> None:
        self.flags = {tuple(names): flags for names, flags in state["flags"]}
        self.checked_step = state["checked_step"]

    def stop_message(self, step: int, checkpoint_path: str) -> Optional[str]:
        """None if every checked loss stayed finite up to `step`; else the one-line reason to stop."""
        bad = [name for names, flags in self.flags.items() for name, flag in zip(names, flags.tolist()) if flag]
        checked_step, self.checked_step = self.checked_step, step
        if not bad:
            return None
        self.flags = {}  # reported: the checkpoint saved at the stop resumes with a clean guard
        return (f"error: non-finite loss ({', '.join(f'losses/{name}' for name in dict.fromkeys(bad))}) in an update "
                f"between steps {checked_step + 1} and {step}: those updates were skipped and the run stopped; "
                f"the last finite state is saved in {checkpoint_path} (lower the learning rate or the method's loss "
                "weights, then --resume)")
