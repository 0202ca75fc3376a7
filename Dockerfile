# megatest's image: the daemon plus what agents need to build and judge the mega projects.
#   docker build -t megatest .
#   docker run --rm megatest run configs/quickstart.toml
# On ECS the task definition `megatest ecs launch` registers runs
#   megatest run CONFIG --sync s3://BUCKET/sessions/ID   (or `megatest resume s3://…`).

# --- build ------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin megatest

# --- runtime: a Rust toolchain, python3, git, the acceptance suites' reference systems
# (redis-server, sqlite3) and bubblewrap for the agents' sandbox ------------------------------
FROM rust:1-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates git python3 python3-venv python3-pip \
        redis-server redis-tools sqlite3 bubblewrap procps \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/megatest
COPY --from=build /src/target/release/megatest /usr/local/bin/megatest
COPY configs ./configs
COPY system_tests ./system_tests
ENV MEGATEST_RUNS_DIR=/opt/megatest/test_runs \
    MEGATEST_API_ADDR=127.0.0.1:0
ENTRYPOINT ["megatest"]
CMD ["run", "configs/quickstart.toml"]
