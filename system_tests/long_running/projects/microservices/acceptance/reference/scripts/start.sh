#!/bin/sh
# Reference ServiceMesh: ./scripts/start.sh PORT — registry on PORT+1, users ×2, orders,
# inventory and the gateway on PORT; prints `ready` when /healthz/all is healthy; SIGTERM stops all.
set -u
PORT=$1
REGISTRY_PORT=$((PORT + 1))
DATA=${DATA_DIR:-./data}
HERE=$(dirname "$0")
mkdir -p "$DATA"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PIDS=""
start() { python3 "$HERE/mesh.py" "$@" & PIDS="$PIDS $!"; }
stop_all() { kill -TERM $PIDS 2>/dev/null; wait; exit 0; }
trap stop_all TERM INT
REGISTRY="http://127.0.0.1:$REGISTRY_PORT"
start registry --port "$REGISTRY_PORT"
sleep 0.3
start users --port "$(free_port)" --registry "$REGISTRY" --id users-1 --data-dir "$DATA"
start users --port "$(free_port)" --registry "$REGISTRY" --id users-2 --data-dir "$DATA"
start orders --port "$(free_port)" --registry "$REGISTRY" --id orders-1 --data-dir "$DATA"
start inventory --port "$(free_port)" --registry "$REGISTRY" --id inventory-1 --data-dir "$DATA"
start gateway --port "$PORT" --registry "$REGISTRY"
for _ in $(seq 1 100); do
    if python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$PORT/healthz/all', timeout=1).status == 200 else 1)" 2>/dev/null; then
        echo ready
        break
    fi
    sleep 0.1
done
while true; do sleep 1 & wait $!; done
