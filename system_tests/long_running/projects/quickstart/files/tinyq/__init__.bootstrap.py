"""tinyq: a small persistent priority task queue with acknowledgements and retries."""

__version__ = "0.1.0"
