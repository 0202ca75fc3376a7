import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tinyq(*args, path):
    return subprocess.run(
        [sys.executable, "-m", "tinyq", "--file", path, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


class CliTest(unittest.TestCase):
    def test_push_pop_ack_stats(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "q.json")
            self.assertEqual(tinyq("push", "hello", "--priority", "2", path=path).stdout.strip(), "1")
            popped = json.loads(tinyq("pop", path=path).stdout)
            self.assertEqual(popped["payload"], "hello")
            self.assertEqual(tinyq("ack", str(popped["id"]), path=path).returncode, 0)
            stats = json.loads(tinyq("stats", path=path).stdout)
            self.assertEqual(stats, {"dead": 0, "leased": 0, "ready": 0})

    def test_pop_on_empty_fails(self):
        with tempfile.TemporaryDirectory() as directory:
            result = tinyq("pop", path=os.path.join(directory, "q.json"))
            self.assertEqual(result.returncode, 1)
            self.assertIn("empty", result.stderr)


if __name__ == "__main__":
    unittest.main()
