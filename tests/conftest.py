"""Scheduling only: the longest tests run first.

With one test process per core (pytest-xdist, `--dist worksteal`), each process starts on its share of the
collected tests and an idle one takes tests from the end of a busy one's queue. A test of nearly a minute that
comes late would leave the other core idle while it runs; started first, it runs beside the short tests. Listed
here: the tests that took 15 s or more on this project's 2-core machine (most compile with torch.compile or start Ray).
"""

LONGEST_FIRST = (
    "test_pave.py::test_cudagraphs_on_a_cpu_compiles_the_losses_after_one_warning",
    "test_benchmark.py::test_suite_runs_on_ray_started_by_the_runner_or_already_running",
    "test_benchmark.py::test_speed_benchmark_times_learning_steps_of_named_and_path_scripts",
    "test_base_scripts.py::test_wandb_offline_tracking_uploads_the_videos",
    "test_benchmark.py::test_killed_suite_resumes_without_redoing_finished_runs",
    "test_benchmark.py::test_local_suite_runs_then_skips_everything",
    "test_pave.py::test_without_a_working_compiler_the_run_goes_on_eager_after_one_warning",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.nodeid.split("/")[-1].split("[")[0]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: every other test keeps its place
