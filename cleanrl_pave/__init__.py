"""CleanRL-style single-file implementations of PAVE and policy-smoothness baselines on TD3 and SAC."""
