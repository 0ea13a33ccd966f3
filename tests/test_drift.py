"""A variant script is its base plus marked method blocks: outside the blocks it must match the base line for line.

Blocks are delimited by `# ===== NAME begin =====` and `# ===== NAME end =====` lines. A base line may be replaced
or removed only where a block stands, so `diff base variant` shows exactly the method.
"""

import difflib
import pathlib

import pytest

from tests.helpers import method_blocks

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cleanrl_pave"
BASES = {"td3": "td3_continuous.py", "sac": "sac_continuous.py"}
def drift(base: list[str], variant: list[str]) -> list[str]:
    """Human-readable descriptions of every difference that is not covered by a method block."""
    blocks = method_blocks(variant)
    inside = set()
    for first, last in blocks:
        inside.update(range(first, last + 1))
    problems = []
    matcher = difflib.SequenceMatcher(None, base, variant, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        # blank lines carry no code: where they fall around a block is layout, not drift
        if j2 > j1:
            stray = [j for j in range(j1, j2) if j not in inside and variant[j].strip()]
            if stray:
                problems.append(f"variant line {stray[0] + 1} differs from the base outside a method block: "
                                f"{variant[stray[0]].rstrip()!r}")
        elif any(line.strip() for line in base[i1:i2]) and not any(first <= j1 <= last + 1 for first, last in blocks):
            problems.append(f"base lines {i1 + 1}-{i2} removed outside a method block: {base[i1].rstrip()!r}")
    return problems


def variant_scripts() -> list[pathlib.Path]:
    return sorted(path for path in PACKAGE.glob("*_continuous.py")
                  if path.name not in BASES.values() and path.name.split("_")[0] in BASES)


@pytest.mark.parametrize("variant", variant_scripts(), ids=lambda path: path.stem)
def test_variant_differs_from_base_only_in_method_blocks(variant):
    base = (PACKAGE / BASES[variant.name.split("_")[0]]).read_text().splitlines()
    lines = variant.read_text().splitlines()
    assert method_blocks(lines), f"{variant.name} has no marked method block"
    problems = drift(base, lines)
    assert not problems, f"{variant.name}:\n" + "\n".join(problems)


BASE_SAMPLE = ["import os", "", "def loss(x):", "    y = x * 2", "    return y", "", "print(loss(1))"]


def test_drift_check_accepts_marked_additions_and_replacements():
    variant = ["import os", "", "def loss(x):", "    # ===== M begin =====", "    y = x * 3", "    # ===== M end =====",
               "    return y", "", "print(loss(1))"]
    assert drift(BASE_SAMPLE, variant) == []


def test_drift_check_flags_unmarked_changes_and_removals():
    edited = ["import os", "", "def loss(x):", "    y = x * 3", "    return y", "", "print(loss(1))"]
    assert drift(BASE_SAMPLE, edited)
    removed = ["import os", "", "def loss(x):", "    # ===== M begin =====", "    z = 1", "    # ===== M end =====",
               "    y = x * 2", "    return y", ""]
    assert any("removed" in problem for problem in drift(BASE_SAMPLE, removed))


def test_drift_check_ignores_blank_lines_but_not_code_beside_them():
    assert drift(BASE_SAMPLE, [line for line in BASE_SAMPLE if line] + ["# ===== M begin =====",
                                                                        "# ===== M end ====="]) == []
    assert drift(BASE_SAMPLE, BASE_SAMPLE[:1] + ["", "x = 1"] + BASE_SAMPLE[1:] + ["# ===== M begin =====",
                                                                                  "# ===== M end ====="])


def test_drift_check_rejects_unbalanced_markers():
    with pytest.raises(AssertionError):
        method_blocks(["# ===== M begin =====", "x = 1"])
    with pytest.raises(AssertionError):
        method_blocks(["# ===== M begin =====", "# ===== N end ====="])
