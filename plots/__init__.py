"""Result tables and learning curves for cleanrl_pave runs (loader, tables, curves)."""
