"""The command line, end to end, as the CONTRACT describes it."""

import json
import os

import pytest


def pop(tinyq):
    return json.loads(tinyq.ok("pop"))


@pytest.mark.severity("critical")
@pytest.mark.kind("e2e")
def test_push_prints_a_new_id(tinyq):
    first, second = tinyq.ok("push", "a"), tinyq.ok("push", "b")
    assert first.isdigit() and second.isdigit() and int(first) > 0
    assert first != second


@pytest.mark.severity("critical")
@pytest.mark.kind("e2e")
def test_pop_returns_the_job_as_json(tinyq):
    job_id = int(tinyq.ok("push", "hello world", "--priority", "3"))
    job = pop(tinyq)
    assert {"id", "payload", "priority", "attempts", "lease_until", "enqueued_at"} <= set(job)
    assert (job["id"], job["payload"], job["priority"], job["attempts"]) == (job_id, "hello world", 3, 1)
    assert job["lease_until"] > job["enqueued_at"] > 0


@pytest.mark.severity("critical")
@pytest.mark.kind("e2e")
def test_higher_priority_first_then_fifo(tinyq):
    for payload, priority in [("low-1", "0"), ("high-1", "5"), ("low-2", "0"), ("high-2", "5"), ("mid", "2")]:
        tinyq.ok("push", payload, "--priority", priority)
    order = [pop(tinyq)["payload"] for _ in range(5)]
    assert order == ["high-1", "high-2", "mid", "low-1", "low-2"]


@pytest.mark.severity("high")
@pytest.mark.kind("e2e")
def test_pop_on_an_empty_queue_fails(tinyq):
    done = tinyq.cli("pop")
    assert done.returncode == 1
    assert "empty" in done.stderr
    assert done.stdout.strip() == ""


@pytest.mark.severity("high")
@pytest.mark.kind("e2e")
def test_stats_count_ready_leased_and_ack(tinyq):
    assert json.loads(tinyq.ok("stats")) == {"dead": 0, "leased": 0, "ready": 0}
    tinyq.ok("push", "a")
    tinyq.ok("push", "b")
    job = pop(tinyq)
    assert json.loads(tinyq.ok("stats")) == {"dead": 0, "leased": 1, "ready": 1}
    tinyq.ok("ack", str(job["id"]))
    assert json.loads(tinyq.ok("stats")) == {"dead": 0, "leased": 0, "ready": 1}


@pytest.mark.severity("high")
@pytest.mark.kind("e2e")
def test_ack_of_a_job_that_is_not_leased_fails(tinyq):
    job_id = tinyq.ok("push", "a")
    done = tinyq.cli("ack", job_id)
    assert done.returncode == 1 and done.stderr.strip()
    done = tinyq.cli("ack", "9999")
    assert done.returncode == 1 and done.stderr.strip()


@pytest.mark.severity("medium")
@pytest.mark.kind("e2e")
def test_the_queue_file_holds_only_the_queue(tinyq, tmp_path):
    for n in range(5):
        tinyq.ok("push", f"job-{n}")
    pop(tinyq)
    assert sorted(os.listdir(tmp_path)) == ["queue.json"], "temporary files left beside the queue file"


@pytest.mark.severity("high")
@pytest.mark.kind("e2e")
def test_start_command_prints_stats(project, tmp_path):
    project.require_built()
    done = project.run(["sh", "-c", project.start_command])
    assert done.returncode == 0, done.stderr[-500:]
    assert json.loads(done.stdout) == {"dead": 0, "leased": 0, "ready": 0}
    if os.path.exists(project.dir / "queue.json"):
        os.unlink(project.dir / "queue.json")
