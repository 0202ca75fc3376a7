#!/usr/bin/env python3
"""Reference RedQueue for the acceptance suite (not a product): a compact asyncio server that
honours CONTRACT.md, so the suite can be checked against an implementation that passes it.
Run as `./target/release/redqueue --port PORT --data-dir DIR [--fsync always|everysec|no]` (the
cargo-built launcher runs this script)."""

import argparse
import asyncio
import heapq
import itertools
import json
import os
import signal
import sys
import time

MAX_DELIVERIES = 3
DEFAULT_LEASE_MS = 30000
WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
MAX_BULK = 512 * 1024 * 1024


class ProtocolError(Exception):
    pass


def bulk(value):
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, str):
        value = value.encode()
    return b"$%d\r\n%s\r\n" % (len(value), value)


def array(items):
    if items is None:
        return b"*-1\r\n"
    return b"*%d\r\n" % len(items) + b"".join(bulk(i) for i in items)


def integer(n):
    return b":%d\r\n" % n


def error(message):
    return b"-" + message.encode() + b"\r\n"


def arity(name):
    return error(f"ERR wrong number of arguments for '{name}' command")


class Task:
    __slots__ = ("id", "queue", "payload", "priority", "seq", "not_before", "deliveries", "lease_until")

    def __init__(self, id, queue, payload, priority, seq, not_before):
        self.id, self.queue, self.payload, self.priority, self.seq = id, queue, payload, priority, seq
        self.not_before, self.deliveries, self.lease_until = not_before, 0, 0.0


class Engine:
    """Lists and task queues in one key space; the log records every change to tasks."""

    def __init__(self, data_dir, fsync):
        self.lists = {}
        self.queues = {}  # name -> heap of (-priority, seq, id)
        self.tasks = {}
        self.sizes = {}  # queue -> tasks in it (ready, delayed or leased)
        self.leased = {}
        self.seq = itertools.count()
        self.next_id = 1
        self.stats = dict(tasks_pushed=0, tasks_acked=0, tasks_redelivered=0, tasks_dead_lettered=0)
        self.fsync = fsync
        self.waiters = {}
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, "redqueue.log")
        self.replay()
        self.log = open(self.path, "ab")
        self.dirty = False
        self.last_sync = time.monotonic()

    # -- persistence -------------------------------------------------------------------------
    def replay(self):
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as handle:
            data = handle.read()
        good = 0
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                break  # a record cut short by a crash: replay stops there
            self.apply(record, replaying=True)
            good += len(line) + 1
        if good < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good)

    def append(self, record):
        self.log.write(json.dumps(record).encode() + b"\n")
        self.dirty = True

    def sync(self):
        """Before replies are sent (group commit: one fsync per batch of pipelined commands)."""
        if not self.dirty:
            return
        self.log.flush()
        self.dirty = False
        if self.fsync == "always":
            os.fsync(self.log.fileno())
        elif self.fsync == "everysec" and time.monotonic() - self.last_sync >= 1.0:
            os.fsync(self.log.fileno())
            self.last_sync = time.monotonic()

    def apply(self, record, replaying=False):
        op = record["op"]
        if op == "push":
            task = Task(record["id"], record["queue"], record["payload"].encode("latin-1"), record["priority"],
                        next(self.seq), record["not_before"])
            self.tasks[task.id] = task
            self.sizes[task.queue] = self.sizes.get(task.queue, 0) + 1
            heapq.heappush(self.queues.setdefault(task.queue, []), (-task.priority, task.seq, task.id))
            self.next_id = max(self.next_id, int(task.id) + 1)
        elif op == "ack":
            task = self.tasks.pop(record["id"], None)
            self.leased.pop(record["id"], None)
            if task is not None:
                self.sizes[task.queue] -= 1
        elif op == "deliver":
            task = self.tasks.get(record["id"])
            if task:
                task.deliveries += 1

    # -- lists -------------------------------------------------------------------------------
    def list_for(self, key, create):
        key = key.decode("latin-1")
        if self.sizes.get(key):
            return WRONGTYPE
        if key not in self.lists and create:
            self.lists[key] = []
        return self.lists.get(key)

    # -- tasks -------------------------------------------------------------------------------
    def push(self, queue, payload, priority, delay_ms, replaying=False):
        task_id = str(self.next_id)
        self.next_id += 1
        record = dict(op="push", id=task_id, queue=queue.decode("latin-1"), payload=payload.decode("latin-1"),
                      priority=priority, not_before=time.time() + delay_ms / 1000.0)
        self.append(record)
        record["queue"] = queue.decode("latin-1")
        self.apply(record)
        self.stats["tasks_pushed"] += 1
        self.wake(record["queue"])
        return task_id

    def expire(self):
        now = time.time()
        for task_id in [t for t, until in self.leased.items() if until <= now]:
            self.release(task_id)

    def release(self, task_id):
        """A lease ended without an ack: deliver again, or dead-letter after MAX_DELIVERIES."""
        self.leased.pop(task_id, None)
        task = self.tasks[task_id]
        if task.deliveries >= MAX_DELIVERIES:
            self.append(dict(op="ack", id=task_id))
            self.tasks.pop(task_id)
            self.sizes[task.queue] -= 1
            dead_queue = task.queue + ":dead"
            record = dict(op="push", id=task_id, queue=dead_queue, payload=task.payload.decode("latin-1"),
                          priority=0, not_before=0)
            self.append(record)
            self.apply(record)
            self.stats["tasks_dead_lettered"] += 1
            self.wake(dead_queue)
        else:
            heapq.heappush(self.queues.setdefault(task.queue, []), (-task.priority, task.seq, task_id))
            self.stats["tasks_redelivered"] += 1
            self.wake(task.queue)

    def pop(self, queue, lease_ms):
        self.expire()
        heap = self.queues.get(queue)
        if not heap:
            return None
        now = time.time()
        held = []
        found = None
        while heap:
            entry = heapq.heappop(heap)
            task = self.tasks.get(entry[2])
            if task is None or task.queue != queue or entry[2] in self.leased:
                continue
            if task.not_before > now:
                held.append(entry)
                continue
            found = task
            break
        for entry in held:
            heapq.heappush(heap, entry)
        if found is None:
            return None
        found.deliveries += 1
        self.append(dict(op="deliver", id=found.id))
        self.leased[found.id] = now + lease_ms / 1000.0
        return found

    def ack(self, task_id):
        if task_id not in self.leased:
            return 0
        self.append(dict(op="ack", id=task_id))
        self.leased.pop(task_id)
        task = self.tasks.pop(task_id)
        self.sizes[task.queue] -= 1
        self.stats["tasks_acked"] += 1
        return 1

    def nack(self, task_id):
        if task_id not in self.leased:
            return 0
        self.release(task_id)
        return 1

    def queue_stats(self, queue):
        self.expire()
        now = time.time()
        ready = delayed = leased = dead = 0
        for task in self.tasks.values():
            if task.queue == queue:
                if task.id in self.leased:
                    leased += 1
                elif task.not_before > now:
                    delayed += 1
                else:
                    ready += 1
            elif task.queue == queue + ":dead" and task.id not in self.leased:
                dead += 1
        return [b"ready", ready, b"delayed", delayed, b"leased", leased, b"dead", dead]

    def wake(self, queue):
        for future in self.waiters.pop(queue, []):
            if not future.done():
                future.set_result(None)


class Server:
    def __init__(self, engine):
        self.engine = engine
        self.clients = 0

    async def handle(self, reader, writer):
        self.clients += 1
        buffer = b""
        try:
            while True:
                replies = []
                failed = None
                while True:
                    try:
                        command, buffer = parse(buffer)
                    except ProtocolError as err:
                        failed = error(f"ERR Protocol error: {err}")
                        break
                    if command is None:
                        break
                    if command:
                        replies.append(await self.dispatch(command))
                self.engine.sync()
                if failed:
                    replies.append(failed)
                if replies:
                    writer.write(b"".join(replies))
                    await writer.drain()
                if failed:
                    return
                data = await reader.read(65536)
                if not data:
                    return
                buffer += data
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.clients -= 1
            writer.close()

    async def dispatch(self, args):
        name = args[0].decode("latin-1").lower()
        argv = args[1:]
        engine = self.engine
        if name == "ping":
            if len(argv) > 1:
                return arity("ping")
            return bulk(argv[0]) if argv else b"+PONG\r\n"
        if name in ("lpush", "rpush"):
            if len(argv) < 2:
                return arity(name)
            items = engine.list_for(argv[0], create=True)
            if items is WRONGTYPE:
                return WRONGTYPE
            for value in argv[1:]:
                if name == "lpush":
                    items.insert(0, value)
                else:
                    items.append(value)
            return integer(len(items))
        if name in ("lpop", "rpop"):
            if len(argv) not in (1, 2):
                return arity(name)
            count = None
            if len(argv) == 2:
                try:
                    count = int(argv[1])
                except ValueError:
                    count = -1
                if count < 0:
                    return error("ERR value is out of range, must be positive")
            items = engine.list_for(argv[0], create=False)
            if items is WRONGTYPE:
                return WRONGTYPE
            if not items:
                return b"*-1\r\n" if count is not None else b"$-1\r\n"
            taken = []
            for _ in range(1 if count is None else count):
                if not items:
                    break
                taken.append(items.pop(0) if name == "lpop" else items.pop())
            if not items:
                del engine.lists[argv[0].decode("latin-1")]
            return bulk(taken[0]) if count is None else array(taken)
        if name == "llen":
            if len(argv) != 1:
                return arity(name)
            items = engine.list_for(argv[0], create=False)
            if items is WRONGTYPE:
                return WRONGTYPE
            return integer(len(items or []))
        if name == "tq.push":
            if len(argv) < 2 or len(argv) % 2:
                return arity(name)
            if argv[0].decode("latin-1") in engine.lists:
                return WRONGTYPE
            priority, delay = 0, 0
            options = argv[2:]
            for i in range(0, len(options), 2):
                key = options[i].upper()
                try:
                    value = int(options[i + 1])
                except ValueError:
                    return error("ERR value is not an integer or out of range")
                if key == b"PRIORITY":
                    priority = value
                elif key == b"DELAY" and value >= 0:
                    delay = value
                else:
                    return error("ERR syntax error")
            return bulk(engine.push(argv[0], argv[1], priority, delay))
        if name in ("tq.pop", "tq.bpop"):
            if name == "tq.pop" and len(argv) not in (1, 3):
                return arity(name)
            if name == "tq.bpop" and len(argv) != 2:
                return arity(name)
            queue = argv[0].decode("latin-1")
            if queue in engine.lists:
                return WRONGTYPE
            lease = DEFAULT_LEASE_MS
            if name == "tq.pop" and len(argv) == 3:
                if argv[1].upper() != b"LEASE":
                    return error("ERR syntax error")
                try:
                    lease = int(argv[2])
                except ValueError:
                    return error("ERR value is not an integer or out of range")
                if lease <= 0:
                    return error("ERR value is out of range, must be positive")
            deadline = None
            if name == "tq.bpop":
                try:
                    timeout = float(argv[1])
                except ValueError:
                    return error("ERR timeout is not a float or out of range")
                if timeout < 0:
                    return error("ERR timeout is negative")
                deadline = None if timeout == 0 else time.monotonic() + timeout
            while True:
                task = engine.pop(queue, lease)
                if task is not None:
                    return array([task.id, task.payload])
                if name == "tq.pop":
                    return b"*-1\r\n"
                wait = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
                if wait <= 0:
                    return b"*-1\r\n"
                future = asyncio.get_running_loop().create_future()
                engine.waiters.setdefault(queue, []).append(future)
                try:
                    await asyncio.wait_for(future, wait)
                except asyncio.TimeoutError:
                    pass
        if name in ("tq.ack", "tq.nack"):
            if len(argv) != 1:
                return arity(name)
            engine.expire()
            task_id = argv[0].decode("latin-1")
            return integer(engine.ack(task_id) if name == "tq.ack" else engine.nack(task_id))
        if name == "tq.stats":
            if len(argv) != 1:
                return arity(name)
            items = engine.queue_stats(argv[0].decode("latin-1"))
            return b"*%d\r\n" % len(items) + b"".join(bulk(i) if isinstance(i, bytes) else integer(i) for i in items)
        if name == "info":
            engine.expire()
            lines = ["# Stats"] + [f"{k}:{v}" for k, v in engine.stats.items()]
            lines += ["# Clients", f"connected_clients:{self.clients}"]
            return bulk("\r\n".join(lines) + "\r\n")
        shown = " ".join(f"'{a.decode('latin-1')}'" for a in argv[:3])
        return error(f"ERR unknown command '{args[0].decode('latin-1')}', with args beginning with: {shown} ")


def parse(buffer):
    """One command from the buffer: (args, rest), (None, buffer) when incomplete."""
    if not buffer:
        return None, buffer
    if buffer[:1] != b"*":
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > 65536:
                raise ProtocolError("too big inline request")
            return None, buffer
        return buffer[:end].split(), buffer[end + 2:]
    end = buffer.find(b"\r\n")
    if end < 0:
        return None, buffer
    try:
        count = int(buffer[1:end])
    except ValueError:
        raise ProtocolError("invalid multibulk length")
    if count > 1024 * 1024:
        raise ProtocolError("invalid multibulk length")
    pos = end + 2
    args = []
    for _ in range(max(count, 0)):
        end = buffer.find(b"\r\n", pos)
        if end < 0:
            return None, buffer
        if buffer[pos:pos + 1] != b"$":
            raise ProtocolError(f"expected '$', got '{buffer[pos:pos + 1].decode('latin-1')}'")
        try:
            size = int(buffer[pos + 1:end])
        except ValueError:
            raise ProtocolError("invalid bulk length")
        if size < 0 or size > MAX_BULK:
            raise ProtocolError("invalid bulk length")
        start = end + 2
        if len(buffer) < start + size + 2:
            return None, buffer
        if buffer[start + size:start + size + 2] != b"\r\n":
            raise ProtocolError("bulk string not terminated")
        args.append(buffer[start:start + size])
        pos = start + size + 2
    return args, buffer[pos:]


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--fsync", choices=["always", "everysec", "no"], default="always")
    args = parser.parse_args()
    engine = Engine(args.data_dir, args.fsync)
    server = Server(engine)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", args.port, backlog=2048, limit=1 << 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    listener.close()
    engine.log.flush()
    os.fsync(engine.log.fileno())
    engine.log.close()


if __name__ == "__main__":
    asyncio.run(main())
