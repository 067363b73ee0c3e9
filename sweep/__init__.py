"""The sweep service: config -> grid of workload specs -> campaign (chunks run on Ray or
in-process) -> results store -> statistics -> report and MLflow tracking.  ``python -m sweep --help``; docs/sweep.md."""
