"""The Celery app and its thin tasks. Never imported by api/ (tasks are sent by name)."""
