"""The sweep service: config -> grid of workload specs -> Ray runner -> results store ->
analysis (statistics, computed once and cached) -> report and MLflow tracking, siblings.
``python -m sweep --help``; docs/sweep.md."""
