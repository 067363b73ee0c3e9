"""The sweep service: config -> grid of workload specs -> Ray runner -> results store ->
statistics -> report and MLflow tracking.  ``python -m sweep --help``; docs/sweep.md."""
