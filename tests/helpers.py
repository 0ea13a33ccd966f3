"""Shared by the tests that train scripts."""


def eager(module) -> dict:
    """Args overrides that run a script's PAVE loss eager: compiling it costs 20-30 s per script and process, so only
    the tests of compilation itself (tests/test_pave.py) compile."""
    return {"pave_compile": False} if "pave_compile" in module.Args.__dataclass_fields__ else {}
