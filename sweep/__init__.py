"""The sweep service: config -> grid of workload specs -> campaign (chunks run on Ray or
in-process) -> results store -> analysis (statistics, computed once and cached) -> report
and MLflow tracking, siblings.  ``python -m sweep --help``; docs/sweep.md."""
