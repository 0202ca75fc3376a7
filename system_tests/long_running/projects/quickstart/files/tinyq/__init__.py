"""tinyq: a small persistent priority task queue with acknowledgements and retries."""

__version__ = "0.1.0"

from tinyq.queue import Job, TaskQueue, QueueEmpty  # noqa: E402,F401
