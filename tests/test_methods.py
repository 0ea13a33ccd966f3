"""The method registry (cleanrl_pave/methods.py) names every training script, and the runner and the plots read it."""

import pathlib

from cleanrl_pave import methods

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cleanrl_pave"
SCRIPTS = sorted(path.stem for path in PACKAGE.glob("*_continuous.py"))


def test_every_script_is_a_registered_backbone_and_method():
    assert SCRIPTS
    for script in SCRIPTS:
        parsed = methods.parse_script(script)
        assert parsed is not None, script
        backbone, method = parsed
        assert backbone in methods.BACKBONES and method in methods.METHOD_LABELS, script
        assert methods.script_name(backbone, method) == script


def test_every_registered_method_has_a_script():
    for method in methods.METHOD_ORDER:
        assert any(methods.script_name(backbone, method) in SCRIPTS for backbone in methods.BACKBONES), method


def test_script_names_parse():
    assert methods.parse_script("td3_continuous") == ("td3", "base")
    assert methods.parse_script("sac_caps_pave_continuous") == ("sac", "caps_pave")
    assert methods.parse_script("ppo_continuous") is None and methods.parse_script("td3_pave") is None


def test_tables_and_curves_use_the_registry():
    from plots import curves, loader, tables

    assert tables.METHOD_ORDER is methods.METHOD_ORDER and tables.BACKBONE_ORDER is methods.BACKBONES
    assert curves.METHOD_LABELS is methods.METHOD_LABELS
    assert loader.parse_script("td3_sn_critic_continuous") == ("td3", "sn_critic")
    assert curves.line_label("sac", "pave_lipsnet[x]") == "SAC PAVE + LipsNet [x]"
