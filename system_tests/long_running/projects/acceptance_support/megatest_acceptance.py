"""pytest plugin shared by megatest's hidden acceptance suites (`projects/<type>/acceptance/`).

megatest runs a suite as

    python -m pytest SUITE -p megatest_acceptance --project-dir DIR --results-json OUT.json \
        --junitxml OUT.xml -o junit_family=xunit1

with this directory on PYTHONPATH. The plugin

- requires every case to carry ``@pytest.mark.severity("critical" | "high" | "medium")`` (a
  failure counts as a bug of that severity: the upstream ``max_bugs_*`` targets) and lets it
  carry ``@pytest.mark.kind("integration" | "e2e" | "durability" | "robustness" | "performance")``
  (which upstream success criterion it evidences; default ``integration``);
- gives cases the project under test (``project``): its directory, the CONTRACT's start command
  and, when megatest's build failed, the reason (then no case starts anything: each fails with
  "build failed: ...");
- starts what the agents built with the start command on a free loopback port (``servers``),
  waits for its ``ready`` line, samples the resident memory of its process group, stops it with
  SIGTERM and fails the case when it does not stop;
- writes ``--results-json``: every case with outcome, severity, kind, wall seconds and the tail of
  its failure, plus the measurements cases recorded (``measure``), e.g. throughput.
"""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

SEVERITIES = ("critical", "high", "medium")
KINDS = ("integration", "e2e", "durability", "robustness", "performance")
FAILURE_TAIL_CHARS = 1500
READY_TIMEOUT_SECS = float(os.environ.get("MEGATEST_READY_TIMEOUT_SECS", "30"))
STOP_TIMEOUT_SECS = 10.0
# A start command without shell operators is exec'd by `sh -c`, so the process the suite signals
# is the program the CONTRACT names (SIGTERM reaches it, not only its shell).
SIMPLE_COMMAND = re.compile(r"^[^;&|<>()`\n]*$")

_cases = {}
_started_groups = []
_measurements = {}
_peak_rss = {"bytes": None}


def pytest_addoption(parser):
    group = parser.getgroup("megatest acceptance")
    group.addoption("--project-dir", required=True, help="the project under test")
    group.addoption("--start-command", default="", help="the CONTRACT's start command (sh -c)")
    group.addoption("--build-failure", default="", help="why megatest's build failed (empty: built)")
    group.addoption("--results-json", default="", help="where to write the results")


def pytest_configure(config):
    config.addinivalue_line("markers", "severity(level): critical, high or medium")
    config.addinivalue_line("markers", "kind(name): " + ", ".join(KINDS))


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        marker = item.get_closest_marker("severity")
        if marker is None or not marker.args or marker.args[0] not in SEVERITIES:
            raise pytest.UsageError(f"{item.nodeid}: every case needs @pytest.mark.severity(one of {SEVERITIES})")
        kind = item.get_closest_marker("kind")
        if kind is not None and (not kind.args or kind.args[0] not in KINDS):
            raise pytest.UsageError(f"{item.nodeid}: kind must be one of {KINDS}")
        item.user_properties.append(("severity", marker.args[0]))
        item.user_properties.append(("kind", kind.args[0] if kind else "integration"))


def _properties(item_or_report):
    return dict(item_or_report.user_properties)


def pytest_runtest_logreport(report):
    props = _properties(report)
    case = _cases.setdefault(
        report.nodeid,
        {
            "id": report.nodeid,
            "name": report.nodeid.split("::")[-1],
            "severity": props.get("severity", "medium"),
            "kind": props.get("kind", "integration"),
            "outcome": "passed",
            "wall_secs": 0.0,
            "message": None,
        },
    )
    case["wall_secs"] += report.duration
    if report.failed:
        # A failure in set-up or tear-down (the server did not start or stop) fails the case too.
        case["outcome"] = "failed"
        crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", None)
        text = crash or report.longreprtext or ""
        case["message"] = (case["message"] + "\n" if case["message"] else "") + text[-FAILURE_TAIL_CHARS:]
    elif report.skipped and case["outcome"] == "passed" and report.when in ("setup", "call"):
        case["outcome"] = "skipped"
        case["message"] = report.longreprtext[-FAILURE_TAIL_CHARS:] if report.longreprtext else None


def pytest_sessionfinish(session, exitstatus):
    # Nothing a case started outlives the suite.
    for pgid in _started_groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    path = session.config.getoption("--results-json")
    if not path:
        return
    document = {
        "cases": list(_cases.values()),
        "measurements": _measurements,
        "peak_rss_bytes": _peak_rss["bytes"],
        "pytest_exit_status": int(exitstatus),
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(document, handle, indent=1)
    os.replace(tmp, path)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, timeout=10.0):
    """Wait until 127.0.0.1:port accepts connections; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Project:
    """The project under test, as the cases see it."""

    def __init__(self, directory, start_command, build_failure):
        self.dir = Path(directory).resolve()
        self.start_command = start_command
        self.build_failure = build_failure or None

    def require_built(self):
        if self.build_failure:
            pytest.fail(f"build failed: {self.build_failure}", pytrace=False)

    def run(self, args, timeout=30, env=None, input=None):
        """Run a command (argv list) in the project directory; returns CompletedProcess."""
        self.require_built()
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run(
            args, cwd=self.dir, env=full_env, input=input, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="session")
def project(request):
    config = request.config
    return Project(
        config.getoption("--project-dir"),
        config.getoption("--start-command"),
        config.getoption("--build-failure"),
    )


def _group_rss_bytes(pgid):
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            with open(f"/proc/{entry}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


class Server:
    """What the agents built, started with the CONTRACT's start command (``sh -c``) in the project
    directory with ``PORT`` and ``DATA_DIR`` set, in its own process group."""

    def __init__(self, project, port, data_dir, extra_env=None):
        self.project = project
        self.port = port
        self.data_dir = Path(data_dir)
        self.output = []
        self.ready = threading.Event()
        env = dict(os.environ)
        env.update({"PORT": str(port), "DATA_DIR": str(self.data_dir)})
        env.update(extra_env or {})
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = project.start_command
        if SIMPLE_COMMAND.match(command):
            command = "exec " + command
        self.proc = subprocess.Popen(
            ["sh", "-c", command],
            cwd=project.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _started_groups.append(self.proc.pid)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if len(self.output) < 2000:
                self.output.append(line)
            if line.strip() == "ready":
                self.ready.set()

    def _sample(self):
        while self._sampling and self.proc.poll() is None:
            rss = _group_rss_bytes(self.proc.pid)
            if rss and (_peak_rss["bytes"] is None or rss > _peak_rss["bytes"]):
                _peak_rss["bytes"] = rss
            time.sleep(0.2)

    def tail(self, lines=15):
        return "\n".join(self.output[-lines:])

    def wait_ready(self, timeout=READY_TIMEOUT_SECS):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.05):
                return
            if self.proc.poll() is not None:
                self._reader.join(1)
                pytest.fail(
                    f"the server never became ready: `{self.project.start_command}` exited "
                    f"{self.proc.returncode}; output:\n{self.tail()}",
                    pytrace=False,
                )
        self.kill()
        pytest.fail(
            f"the server never became ready: no `ready` line within {timeout:.0f} s; output:\n{self.tail()}",
            pytrace=False,
        )

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGTERM to the group; returns the exit status, or None when it had to be killed.
        Whatever is left in the group afterwards (children the program did not stop) is killed."""
        self._sampling = False
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            status = self.proc.wait(STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            status = None
        self.kill()
        return status

    def kill(self):
        """SIGKILL to the group (a crash)."""
        self._sampling = False
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(STOP_TIMEOUT_SECS)


class Servers:
    """Starts servers for one case and stops every one still running at its end, failing the
    case when one does not stop on SIGTERM."""

    def __init__(self, project, tmp_path):
        self.project = project
        self.tmp_path = tmp_path
        self.started = []

    def start(self, data_dir=None, port=None, extra_env=None, wait=True):
        self.project.require_built()
        if not self.project.start_command:
            pytest.fail("the project spec has no start command", pytrace=False)
        server = Server(
            self.project,
            port or free_port(),
            data_dir or (self.tmp_path / f"data-{len(self.started)}"),
            extra_env,
        )
        self.started.append(server)
        if wait:
            server.wait_ready()
        return server

    def stop_all(self):
        stuck = []
        for server in self.started:
            was_running = server.alive()
            if server.stop() is None and was_running:
                stuck.append(server)
        if stuck:
            pytest.fail(f"the server did not stop within {STOP_TIMEOUT_SECS:.0f} s of SIGTERM", pytrace=False)


@pytest.fixture
def servers(project, tmp_path):
    pool = Servers(project, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def measure():
    """``measure(name, value, unit, target=None)`` records a figure for megatest's report."""

    def record(name, value, unit, target=None, note=None):
        _measurements[name] = {"value": value, "unit": unit, "target": target, "note": note}

    return record
