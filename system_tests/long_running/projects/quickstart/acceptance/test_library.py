"""The library API the CONTRACT names, driven with an injected clock."""

import pytest

CLOCK = """
class Clock:
    def __init__(self):
        self.now = 1000.0
    def __call__(self):
        return self.now
clock = Clock()
"""


@pytest.mark.severity("critical")
@pytest.mark.kind("integration")
def test_expired_lease_is_delivered_again(tinyq):
    result = tinyq.lib(CLOCK + """
q = tinyq.TaskQueue(lease_seconds=10, max_attempts=3, clock=clock)
q.push("a")
first = q.pop()
try:
    q.pop(); second_pop = "job"
except tinyq.QueueEmpty:
    second_pop = "empty"
clock.now += 11
again = q.pop()
print(json.dumps({"second_pop": second_pop, "same": again.id == first.id, "attempts": again.attempts}))
""")
    assert result == {"second_pop": "empty", "same": True, "attempts": 2}


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_max_attempts_then_dead_letter(tinyq):
    result = tinyq.lib(CLOCK + """
q = tinyq.TaskQueue(lease_seconds=5, max_attempts=2, clock=clock)
q.push("poison")
q.pop(); clock.now += 6
q.pop(); clock.now += 6
try:
    q.pop(); third = "job"
except tinyq.QueueEmpty:
    third = "empty"
print(json.dumps({"third": third, "dead": [j.payload for j in q.dead], "stats": q.stats()}))
""")
    assert result == {"third": "empty", "dead": ["poison"], "stats": {"dead": 1, "leased": 0, "ready": 0}}


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_nack_redelivers_and_unknown_ids_raise(tinyq):
    result = tinyq.lib(CLOCK + """
q = tinyq.TaskQueue(clock=clock)
q.push("a")
job = q.pop()
q.nack(job.id)
again = q.pop()
errors = []
for call in (q.ack, q.nack):
    try:
        call(12345)
    except KeyError:
        errors.append("KeyError")
print(json.dumps({"again": again.id == job.id, "attempts": again.attempts, "errors": errors}))
""")
    assert result == {"again": True, "attempts": 2, "errors": ["KeyError", "KeyError"]}


@pytest.mark.severity("medium")
@pytest.mark.kind("integration")
def test_bad_settings_are_rejected(tinyq):
    result = tinyq.lib("""
out = []
for kwargs in ({"lease_seconds": 0}, {"lease_seconds": -1}, {"max_attempts": 0}):
    try:
        tinyq.TaskQueue(**kwargs); out.append("accepted")
    except ValueError:
        out.append("ValueError")
print(json.dumps(out))
""")
    assert result == ["ValueError"] * 3


@pytest.mark.severity("high")
@pytest.mark.kind("durability")
def test_save_and_load_keep_jobs_leases_and_ids(tinyq, tmp_path):
    path = str(tmp_path / "saved.json")
    result = tinyq.lib(CLOCK + f"""
from tinyq import store
q = tinyq.TaskQueue(clock=clock)
for n in range(3):
    q.push(f"job-{{n}}", priority=n)
leased = q.pop()
store.save(q, {path!r})
r = store.load({path!r}, clock=clock)
new_id = r.push("later")
order = [r.pop().payload for _ in range(3)]
print(json.dumps({{"stats": q.stats(), "order": order, "new_id_unique": new_id not in (leased.id, 1, 2, 3),
                   "leased_kept": r.stats()["leased"]}}))
""")
    assert result["stats"] == {"dead": 0, "leased": 1, "ready": 2}
    assert result["order"] == ["job-1", "job-0", "later"]
    assert result["new_id_unique"]
    assert result["leased_kept"] == 4


@pytest.mark.severity("medium")
@pytest.mark.kind("durability")
def test_a_missing_file_is_an_empty_queue(tinyq, tmp_path):
    result = tinyq.lib(f"""
from tinyq import store
print(json.dumps(store.load({str(tmp_path / "nothing-here.json")!r}).stats()))
""")
    assert result == {"dead": 0, "leased": 0, "ready": 0}
