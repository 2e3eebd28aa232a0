"""The names of the worker's tasks: the api sends a job by its task's name and never imports the
task code (worker/tasks.py registers each function under its name here)."""

from __future__ import annotations

RUN_JOB_TASK = "worker.tasks.run_job"

# Scheduled tasks (worker/schedules.py declares when each runs; worker/scheduled_tasks.py).
PURGE_FINISHED_JOBS_TASK = "worker.scheduled_tasks.purge_finished_jobs"
SNAPSHOT_JOB_COUNTS_TASK = "worker.scheduled_tasks.snapshot_job_counts"
PURGE_SCHEDULE_RUNS_TASK = "worker.scheduled_tasks.purge_schedule_runs"
