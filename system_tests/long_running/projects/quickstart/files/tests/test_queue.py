import unittest

from tinyq.queue import QueueEmpty, TaskQueue


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class QueueTest(unittest.TestCase):
    def setUp(self):
        self.clock = FakeClock()
        self.queue = TaskQueue(lease_seconds=10, max_attempts=2, clock=self.clock)

    def test_priority_then_fifo(self):
        self.queue.push("low", priority=0)
        self.queue.push("high", priority=5)
        self.queue.push("low2", priority=0)
        self.assertEqual([self.queue.pop().payload for _ in range(3)], ["high", "low", "low2"])

    def test_empty_raises(self):
        with self.assertRaises(QueueEmpty):
            self.queue.pop()

    def test_ack_removes(self):
        self.queue.push("a")
        job = self.queue.pop()
        self.queue.ack(job.id)
        self.assertEqual(len(self.queue), 0)
        with self.assertRaises(KeyError):
            self.queue.ack(job.id)

    def test_expired_lease_is_redelivered_then_dead_lettered(self):
        self.queue.push("a")
        first = self.queue.pop()
        self.clock.now += 11
        second = self.queue.pop()
        self.assertEqual((first.id, second.attempts), (second.id, 2))
        self.clock.now += 11
        with self.assertRaises(QueueEmpty):
            self.queue.pop()
        self.assertEqual(self.queue.stats(), {"ready": 0, "leased": 0, "dead": 1})

    def test_nack_requeues(self):
        self.queue.push("a")
        job = self.queue.pop()
        self.queue.nack(job.id)
        self.assertEqual(self.queue.pop().id, job.id)

    def test_bad_settings_rejected(self):
        with self.assertRaises(ValueError):
            TaskQueue(lease_seconds=0)
        with self.assertRaises(ValueError):
            TaskQueue(max_attempts=0)


if __name__ == "__main__":
    unittest.main()
