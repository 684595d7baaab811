"""The task-based study: stages, cache, resume."""
