"""Command line: python3 -m tinyq {push,pop,ack,stats} --file QUEUE.json"""

import argparse
import json
import sys

from tinyq import store
from tinyq.queue import QueueEmpty


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tinyq")
    parser.add_argument("--file", default="queue.json")
    sub = parser.add_subparsers(dest="command", required=True)
    push = sub.add_parser("push")
    push.add_argument("payload")
    push.add_argument("--priority", type=int, default=0)
    sub.add_parser("pop")
    ack = sub.add_parser("ack")
    ack.add_argument("job_id", type=int)
    sub.add_parser("stats")
    args = parser.parse_args(argv)

    queue = store.load(args.file)
    if args.command == "push":
        print(queue.push(args.payload, args.priority))
    elif args.command == "pop":
        try:
            job = queue.pop()
        except QueueEmpty:
            print("empty", file=sys.stderr)
            return 1
        print(json.dumps(job.to_dict(), sort_keys=True))
    elif args.command == "ack":
        try:
            queue.ack(args.job_id)
        except KeyError as err:
            print(err.args[0], file=sys.stderr)
            return 1
    elif args.command == "stats":
        print(json.dumps(queue.stats(), sort_keys=True))
    store.save(queue, args.file)
    return 0
