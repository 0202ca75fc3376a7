"""ServiceMesh through its gateway: components, routing, the three services' contracts,
round-robin, request ids, health, metrics, the circuit breaker and a rolling restart."""

import os
import signal
import threading
import time

import httpx
import pytest

from conftest import process_spec, restart, wait_until


@pytest.mark.severity("critical")
@pytest.mark.kind("e2e")
def test_every_component_runs_and_is_healthy(mesh):
    services = mesh.services()
    assert len(services.get("users", [])) == 2, services
    assert len(services.get("orders", [])) == 1 and len(services.get("inventory", [])) == 1, services
    response = mesh.http.get("/healthz/all")
    assert response.status_code == 200
    assert response.json() == {"gateway": "ok", "registry": "ok", "users": "ok", "orders": "ok", "inventory": "ok"}
    for service in services.values():
        for inst in service:
            assert httpx.get(inst["url"] + "/healthz", timeout=5).json() == {"status": "ok"}


@pytest.mark.severity("critical")
@pytest.mark.kind("integration")
def test_routes_reach_each_service(mesh):
    created = mesh.http.post("/users", json={"name": "ada"})
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["name"] == "ada" and isinstance(user["id"], int)
    assert mesh.http.get(f"/users/{user['id']}").json() == user
    assert mesh.http.get("/users/999999").status_code == 404
    put = mesh.http.put("/inventory/widget", json={"stock": 5})
    assert put.status_code == 200 and put.json() == {"item": "widget", "stock": 5}
    assert mesh.http.get("/inventory/widget").json() == {"item": "widget", "stock": 5}
    order = mesh.http.post("/orders", json={"user_id": user["id"], "item": "widget", "qty": 2})
    assert order.status_code == 201, order.text
    assert mesh.http.get(f"/orders/{order.json()['id']}").json() == order.json()
    assert mesh.http.get("/inventory/widget").json()["stock"] == 3
    assert mesh.http.get("/nowhere/1").status_code == 404


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_orders_validate_users_and_reserve_stock(mesh):
    user = mesh.http.post("/users", json={"name": "bob"}).json()
    mesh.http.put("/inventory/bolt", json={"stock": 3})
    assert mesh.http.post("/orders", json={"user_id": 424242, "item": "bolt", "qty": 1}).status_code == 422
    assert mesh.http.post("/orders", json={"user_id": user["id"], "item": "bolt", "qty": 4}).status_code == 409
    assert mesh.http.post("/orders", json={"user_id": user["id"], "item": "nothing", "qty": 1}).status_code == 409
    assert mesh.http.get("/inventory/bolt").json()["stock"] == 3, "a refused order reserved stock"
    assert mesh.http.post("/orders", json={"user_id": user["id"], "item": "bolt", "qty": 3}).status_code == 201
    assert mesh.http.get("/inventory/bolt").json()["stock"] == 0


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_round_robin_across_two_instances(mesh):
    user = mesh.http.post("/users", json={"name": "rr"}).json()
    seen = [mesh.http.get(f"/users/{user['id']}").headers.get("x-instance-id") for _ in range(20)]
    counts = {inst: seen.count(inst) for inst in set(seen)}
    assert set(counts) == {"users-1", "users-2"}, seen
    assert all(8 <= n <= 12 for n in counts.values()), f"not round-robin: {counts}"
    assert all(a != b for a, b in zip(seen, seen[1:])), f"consecutive requests went to one instance: {seen}"


@pytest.mark.severity("medium")
@pytest.mark.kind("integration")
def test_request_ids_are_propagated(mesh):
    response = mesh.http.get("/users/1", headers={"x-request-id": "acceptance-123"})
    assert response.headers.get("x-request-id") == "acceptance-123"
    assert response.headers.get("x-instance-id", "").startswith("users-"), "the service answered"
    generated = mesh.http.get("/users/1").headers.get("x-request-id")
    assert generated and generated != "acceptance-123"


@pytest.mark.severity("medium")
@pytest.mark.kind("integration")
def test_every_metrics_endpoint_parses(mesh):
    mesh.http.get("/users/1")
    names = {s.name for s in mesh.metrics()}
    assert any(n.startswith("gateway_requests") for n in names), names
    assert mesh.sample("gateway_requests_total", service="users") is not None
    assert mesh.metrics(mesh.registry) is not None
    for service in mesh.services().values():
        for inst in service:
            mesh.metrics(inst["url"])  # parses, or the parser raises


@pytest.mark.severity("high")
@pytest.mark.kind("e2e")
def test_a_killed_instance_opens_its_breaker_then_it_half_opens_and_closes(mesh):
    user = mesh.http.post("/users", json={"name": "cb"}).json()
    victim = mesh.instance("users", "users-2")
    spec = process_spec(victim["pid"])
    os.kill(victim["pid"], signal.SIGKILL)
    failures = 0
    for _ in range(12):
        if mesh.http.get(f"/users/{user['id']}").status_code != 200:
            failures += 1
    assert failures == 0, "GETs are retried on the healthy instance"
    assert wait_until(lambda: mesh.sample("gateway_circuit_state", service="users", instance="users-2") == 1, 5), \
        "the breaker of the killed instance did not open"
    assert mesh.sample("gateway_circuit_transitions_total", service="users", instance="users-2", to="open") >= 1
    restarted = restart(spec)
    try:
        assert wait_until(lambda: mesh.instance("users", "users-2") is not None, 10), "the instance did not re-register"

        def closed_again():
            mesh.http.get(f"/users/{user['id']}")
            return mesh.sample("gateway_circuit_state", service="users", instance="users-2") == 0

        assert wait_until(closed_again, 10, step=0.2), "the breaker did not close again"
        assert mesh.sample("gateway_circuit_transitions_total", service="users", instance="users-2", to="half_open") >= 1
        assert mesh.sample("gateway_circuit_transitions_total", service="users", instance="users-2", to="closed") >= 1
    finally:
        restarted.terminate()
        restarted.wait(10)


@pytest.mark.severity("high")
@pytest.mark.kind("e2e")
def test_a_rolling_restart_under_load_loses_no_request(mesh):
    user = mesh.http.post("/users", json={"name": "load"}).json()
    results, stop = [], threading.Event()

    def load():
        with httpx.Client(base_url=mesh.gateway, timeout=10.0) as client:
            while not stop.is_set():
                try:
                    results.append(client.get(f"/users/{user['id']}").status_code)
                except httpx.HTTPError as err:
                    results.append(repr(err))

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(0.5)
    victim = mesh.instance("users", "users-1")
    spec = process_spec(victim["pid"])
    os.kill(victim["pid"], signal.SIGTERM)
    assert wait_until(lambda: not os.path.exists(f"/proc/{victim['pid']}") or
                      open(f"/proc/{victim['pid']}/stat").read().split()[2] == "Z", 10), "SIGTERM did not stop it"
    restarted = restart(spec)
    try:
        assert wait_until(lambda: mesh.instance("users", "users-1") is not None, 10)
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(15)
        restarted.terminate()
        restarted.wait(10)
    failed = [r for r in results if r != 200]
    assert len(results) > 20, f"too little load: {len(results)} requests"
    assert not failed, f"{len(failed)} of {len(results)} requests failed during the restart: {failed[:5]}"


@pytest.mark.severity("high")
@pytest.mark.kind("e2e")
def test_sigterm_to_the_start_command_stops_every_component(mesh):
    pids = [inst["pid"] for service in mesh.services().values() for inst in service]
    os.kill(mesh.server.proc.pid, signal.SIGTERM)  # the start command only, not its group
    try:
        mesh.server.proc.wait(10)
    except Exception:
        pytest.fail("the start command did not stop within 10 s of SIGTERM")

    def gone(pid):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    assert wait_until(lambda: all(gone(pid) for pid in pids), 10), "components survived SIGTERM"


@pytest.mark.severity("medium")
@pytest.mark.kind("e2e")
def test_healthz_all_reports_a_service_that_is_down(mesh):
    victim = mesh.instance("inventory", "inventory-1")
    os.kill(victim["pid"], signal.SIGKILL)

    def reported():
        response = mesh.http.get("/healthz/all")
        return response.status_code == 503 and response.json().get("inventory") != "ok"

    assert wait_until(reported, 8, step=0.2), mesh.http.get("/healthz/all").text
    assert mesh.http.get("/healthz/all").json().get("users") == "ok"
