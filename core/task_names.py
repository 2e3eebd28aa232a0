"""The names of the worker's tasks: the api sends a job by its task's name and never imports the
task code (worker/tasks.py registers each function under its name here)."""

from __future__ import annotations

RUN_JOB_TASK = "worker.tasks.run_job"
