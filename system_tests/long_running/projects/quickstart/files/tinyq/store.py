"""Persistence of a TaskQueue to a JSON file, written atomically."""

import json
import os
import tempfile

from tinyq.queue import TaskQueue


def save(queue, path):
    """Write queue.snapshot() to path: temp file, fsync, rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tinyq-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(queue.snapshot(), handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path, **kwargs):
    """Read a queue saved by save(); a missing file gives an empty queue."""
    if not os.path.exists(path):
        return TaskQueue(**kwargs)
    with open(path) as handle:
        data = json.load(handle)
    return TaskQueue.restore(data, **kwargs)
