import os
import tempfile
import unittest

from tinyq import store
from tinyq.queue import TaskQueue


class StoreTest(unittest.TestCase):
    def test_round_trip_keeps_jobs_and_ids(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "q.json")
            queue = TaskQueue()
            queue.push("a", priority=1)
            queue.push("b")
            leased = queue.pop()
            store.save(queue, path)
            restored = store.load(path)
            self.assertEqual(restored.stats(), {"ready": 1, "leased": 1, "dead": 0})
            restored.ack(leased.id)
            self.assertEqual(restored.pop().payload, "b")
            self.assertEqual(restored.push("c"), 3)

    def test_missing_file_is_empty_queue(self):
        with tempfile.TemporaryDirectory() as directory:
            self.assertEqual(len(store.load(os.path.join(directory, "none.json"))), 0)

    def test_save_leaves_no_temp_files(self):
        with tempfile.TemporaryDirectory() as directory:
            store.save(TaskQueue(), os.path.join(directory, "q.json"))
            self.assertEqual(os.listdir(directory), ["q.json"])


if __name__ == "__main__":
    unittest.main()
