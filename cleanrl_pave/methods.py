"""The registry of backbones and methods: their order and their display names, in one place.

A training script is `cleanrl_pave/<backbone>_continuous.py` (the base, method "base") or
`cleanrl_pave/<backbone>_<method>_continuous.py`. The benchmark suites name scripts, the plots derive the backbone and
method from a script name (`parse_script`), and then:

- tables (`plots/tables.py`) put their columns in `METHOD_ORDER`, the paper's order;
- curves (`plots/curves.py`) name their lines with `METHOD_LABELS` ("TD3 PAVE") in that same order.

A method missing here still works everywhere; it comes after the registered ones under its file name. A new method
gets one entry in `METHOD_LABELS` (README: Adding a method). Importing this module imports nothing else: the benchmark
runner and the plots read it without torch.
"""

from __future__ import annotations

import re

BACKBONES = ("td3", "sac")

# method (the script name's middle part) -> how legends and captions write it; the order is the paper's column order
METHOD_LABELS = {
    "base": "base",
    "caps": "CAPS",
    "grad": "GRAD",
    "asap": "ASAP",
    "l2c2": "L2C2",
    "lipsnet": "LipsNet",
    "sn_critic": "SN-Critic",
    "gp_critic": "GP-Critic",
    "pave": "PAVE",
    "caps_pave": "CAPS + PAVE",
    "pave_lipsnet": "PAVE + LipsNet",
}
METHOD_ORDER = tuple(METHOD_LABELS)

SCRIPT_PATTERN = re.compile(rf"^(?P<backbone>{'|'.join(BACKBONES)})_(?:(?P<method>.+)_)?continuous$")


def script_name(backbone: str, method: str) -> str:
    """The script of a backbone and method: ("td3", "pave") -> "td3_pave_continuous", ("sac", "base") ->
    "sac_continuous"."""
    return f"{backbone}_continuous" if method == "base" else f"{backbone}_{method}_continuous"


def parse_script(name: str) -> tuple[str, str] | None:
    """Backbone and method of a script name, ("td3", "base") for `td3_continuous`; None if it is not one."""
    match = SCRIPT_PATTERN.match(name)
    return None if match is None else (match["backbone"], match["method"] or "base")
