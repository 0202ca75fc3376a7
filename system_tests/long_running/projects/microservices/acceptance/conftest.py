"""Fixtures for the ServiceMesh suite: the whole mesh started per case with the CONTRACT's
start command, an httpx client on the gateway, and helpers to read the registry and the
gateway's Prometheus metrics (parsed with prometheus_client's parser)."""

import os
import signal
import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families


class Mesh:
    def __init__(self, server):
        self.server = server
        self.gateway = f"http://127.0.0.1:{server.port}"
        self.registry = f"http://127.0.0.1:{server.port + 1}"
        self.http = httpx.Client(base_url=self.gateway, timeout=10.0)

    def close(self):
        self.http.close()

    def services(self):
        response = httpx.get(self.registry + "/services", timeout=5.0)
        assert response.status_code == 200, response.text
        return response.json()

    def instance(self, service, instance_id):
        for inst in self.services().get(service, []):
            if inst["id"] == instance_id:
                return inst
        return None

    def metrics(self, url=None):
        text = httpx.get((url or self.gateway) + "/metrics", timeout=5.0).text
        samples = []
        for family in text_string_to_metric_families(text):
            samples.extend(family.samples)
        return samples

    def sample(self, name, **labels):
        for s in self.metrics():
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        return None


def wait_until(condition, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def process_spec(pid):
    """argv, cwd and environment of a running process, to start it again the same way."""
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        argv = [part.decode() for part in handle.read().split(b"\0") if part]
    cwd = os.readlink(f"/proc/{pid}/cwd")
    with open(f"/proc/{pid}/environ", "rb") as handle:
        env = dict(item.decode().split("=", 1) for item in handle.read().split(b"\0") if b"=" in item)
    return argv, cwd, env


def restart(spec):
    argv, cwd, env = spec
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=False)


def free_port_pair():
    """A port P with P and P + 1 free (the gateway and the registry): both are bound at once
    while looking, so a port an outgoing connection holds is never picked."""
    import socket

    for _ in range(200):
        first, second = socket.socket(), socket.socket()
        try:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            second.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
        finally:
            first.close()
            second.close()
    raise RuntimeError("no two adjacent free ports")


@pytest.fixture
def mesh(servers):
    started = Mesh(servers.start(port=free_port_pair()))
    yield started
    started.close()
