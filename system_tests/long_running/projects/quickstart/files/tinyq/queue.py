"""In-memory priority queue with leases, acknowledgements, retries and a dead-letter list."""

import heapq
import itertools
import time
from dataclasses import dataclass, field


class QueueEmpty(Exception):
    """Raised by pop() when no job is ready."""


@dataclass
class Job:
    id: int
    payload: str
    priority: int = 0
    attempts: int = 0
    lease_until: float = 0.0
    enqueued_at: float = field(default_factory=time.time)

    def to_dict(self):
        return {
            "id": self.id,
            "payload": self.payload,
            "priority": self.priority,
            "attempts": self.attempts,
            "lease_until": self.lease_until,
            "enqueued_at": self.enqueued_at,
        }

    @classmethod
    def from_dict(cls, data):
        return cls(**data)


class TaskQueue:
    """Jobs are popped by highest priority, then FIFO. A popped job is leased for
    `lease_seconds`; ack() removes it, nack() or an expired lease puts it back, and a job
    that was delivered `max_attempts` times goes to the dead-letter list instead."""

    def __init__(self, lease_seconds=30.0, max_attempts=3, clock=time.time):
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.clock = clock
        self._ready = []
        self._leased = {}
        self.dead = []
        self._ids = itertools.count(1)
        self._order = itertools.count()

    def push(self, payload, priority=0):
        job = Job(id=next(self._ids), payload=payload, priority=priority, enqueued_at=self.clock())
        self._enqueue(job)
        return job.id

    def _enqueue(self, job):
        heapq.heappush(self._ready, (-job.priority, next(self._order), job))

    def _requeue_expired(self):
        now = self.clock()
        for job_id in [j for j, job in self._leased.items() if job.lease_until <= now]:
            self._retry(self._leased.pop(job_id))

    def _retry(self, job):
        if job.attempts >= self.max_attempts:
            self.dead.append(job)
        else:
            job.lease_until = 0.0
            self._enqueue(job)

    def pop(self):
        self._requeue_expired()
        if not self._ready:
            raise QueueEmpty()
        _, _, job = heapq.heappop(self._ready)
        job.attempts += 1
        job.lease_until = self.clock() + self.lease_seconds
        self._leased[job.id] = job
        return job

    def ack(self, job_id):
        if job_id not in self._leased:
            raise KeyError(f"job {job_id} is not leased")
        del self._leased[job_id]

    def nack(self, job_id):
        if job_id not in self._leased:
            raise KeyError(f"job {job_id} is not leased")
        self._retry(self._leased.pop(job_id))

    def stats(self):
        return {"ready": len(self._ready), "leased": len(self._leased), "dead": len(self.dead)}

    def __len__(self):
        return len(self._ready) + len(self._leased)

    def snapshot(self):
        """All jobs as plain data, for persistence."""
        return {
            "ready": [job.to_dict() for _, _, job in sorted(self._ready)],
            "leased": [job.to_dict() for job in self._leased.values()],
            "dead": [job.to_dict() for job in self.dead],
            "next_id": max([j.id for _, _, j in self._ready] + list(self._leased) + [j.id for j in self.dead] + [0]) + 1,
        }

    @classmethod
    def restore(cls, data, **kwargs):
        """Rebuild a queue from snapshot(); leases keep their expiry time."""
        queue = cls(**kwargs)
        for item in data.get("ready", []):
            queue._enqueue(Job.from_dict(item))
        for item in data.get("leased", []):
            job = Job.from_dict(item)
            queue._leased[job.id] = job
        queue.dead = [Job.from_dict(item) for item in data.get("dead", [])]
        queue._ids = itertools.count(data.get("next_id", 1))
        return queue
