"""Helpers for the tinyq suite: the CLI and the library are run in child processes, so what the
agents wrote can never hang or crash the suite itself."""

import json
import sys

import pytest


class Tinyq:
    def __init__(self, project, queue_file):
        self.project = project
        self.file = str(queue_file)

    def cli(self, *args):
        """`python3 -m tinyq --file F ARGS...` → CompletedProcess."""
        return self.project.run([sys.executable, "-m", "tinyq", "--file", self.file, *args])

    def ok(self, *args):
        done = self.cli(*args)
        assert done.returncode == 0, f"tinyq {' '.join(args)} exited {done.returncode}: {done.stderr[-500:]}"
        return done.stdout.strip()

    def lib(self, code):
        """Run Python `code` in the project with `tinyq` importable; it prints one JSON document
        (its last stdout line), which is returned."""
        done = self.project.run([sys.executable, "-c", "import json, time, tinyq\n" + code])
        assert done.returncode == 0, f"library code failed: {done.stderr[-800:]}"
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        assert lines, "library code printed nothing"
        return json.loads(lines[-1])


@pytest.fixture
def tinyq(project, tmp_path):
    project.require_built()
    return Tinyq(project, tmp_path / "queue.json")
