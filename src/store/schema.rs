//! The schema of `session.db`: migrations applied in order by `user_version`.

/// Bytes the WAL is truncated to after a checkpoint emptied it (`journal_size_limit`).
pub const WAL_SIZE_LIMIT: i64 = 8 << 20;

/// Schema migrations; index + 1 is the `user_version` after applying it.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    project_type TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    time_scale REAL NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL,
    exit_code INTEGER,
    ended_because TEXT
);
CREATE TABLE phases (
    idx INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    planned_session_secs REAL NOT NULL,
    started_session_secs REAL,
    ended_session_secs REAL,
    started_wall_secs REAL,
    ended_wall_secs REAL,
    ended_because TEXT
);
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    phase TEXT NOT NULL,
    role TEXT NOT NULL,
    title TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending','claimed','running','done','failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    agent_id TEXT,
    claimed_session_secs REAL,
    finished_session_secs REAL,
    last_error TEXT
);
CREATE TABLE agent_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    pid INTEGER,
    pgid INTEGER,
    started_session_secs REAL NOT NULL,
    ended_session_secs REAL,
    exit_code INTEGER,
    signal INTEGER,
    outcome TEXT
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    session_secs REAL NOT NULL,
    kind TEXT NOT NULL,
    agent_id TEXT,
    phase TEXT,
    task_id TEXT,
    data TEXT NOT NULL
);
CREATE INDEX events_kind ON events(kind);
CREATE TABLE ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    session_secs REAL NOT NULL,
    agent_id TEXT NOT NULL,
    role TEXT NOT NULL,
    phase TEXT,
    task_id TEXT,
    model_requested TEXT NOT NULL,
    model_served TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    tool_calls INTEGER NOT NULL,
    tool_names TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    status INTEGER NOT NULL,
    error_kind TEXT
);
CREATE TABLE checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    phase TEXT NOT NULL,
    name TEXT NOT NULL,
    command TEXT NOT NULL,
    exit_code INTEGER,
    passed INTEGER NOT NULL,
    timed_out INTEGER NOT NULL,
    wall_secs REAL NOT NULL,
    output_tail TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE ledger ADD COLUMN cost_usd REAL;
ALTER TABLE ledger ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
CREATE TABLE budget_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE checkpoints (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    session_secs REAL NOT NULL,
    trigger TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    parent INTEGER,
    manifest TEXT NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    new_objects INTEGER NOT NULL,
    new_bytes INTEGER NOT NULL,
    consistent INTEGER NOT NULL,
    frozen_ms REAL NOT NULL
);
"#,
    r#"
ALTER TABLE sessions ADD COLUMN config_path TEXT;
ALTER TABLE sessions ADD COLUMN overrides TEXT;
ALTER TABLE sessions ADD COLUMN daemon_pid INTEGER;
"#,
    r#"
CREATE TABLE recoveries (
    id INTEGER PRIMARY KEY,
    failure_kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    detected_at TEXT NOT NULL,
    detected_session_secs REAL NOT NULL,
    rule TEXT NOT NULL,
    action TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    outcome TEXT,
    resolved_session_secs REAL,
    agent_id TEXT,
    task_id TEXT,
    detail TEXT NOT NULL
);
"#,
    // `ledger` and `events` without AUTOINCREMENT: a model call's commit no longer rewrites the
    // `sqlite_sequence` page (neither table ever loses rows, so a plain rowid key never reuses a
    // sequence number: SSE `Last-Event-ID` stays valid). `ledger.call_id` links a row to its
    // `ledger.spool` line (NULL for rows from before).
    r#"
CREATE TABLE ledger_v6 (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    session_secs REAL NOT NULL,
    agent_id TEXT NOT NULL,
    role TEXT NOT NULL,
    phase TEXT,
    task_id TEXT,
    model_requested TEXT NOT NULL,
    model_served TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    tool_calls INTEGER NOT NULL,
    tool_names TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    status INTEGER NOT NULL,
    error_kind TEXT,
    cost_usd REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    call_id INTEGER
);
INSERT INTO ledger_v6 (seq, at, session_secs, agent_id, role, phase, task_id, model_requested,
    model_served, prompt_tokens, completion_tokens, cached_tokens, tool_calls, tool_names,
    latency_ms, status, error_kind, cost_usd, attempts)
  SELECT seq, at, session_secs, agent_id, role, phase, task_id, model_requested, model_served,
    prompt_tokens, completion_tokens, cached_tokens, tool_calls, tool_names, latency_ms, status,
    error_kind, cost_usd, attempts FROM ledger;
DROP TABLE ledger;
ALTER TABLE ledger_v6 RENAME TO ledger;
CREATE TABLE events_v6 (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    session_secs REAL NOT NULL,
    kind TEXT NOT NULL,
    agent_id TEXT,
    phase TEXT,
    task_id TEXT,
    data TEXT NOT NULL
);
INSERT INTO events_v6 (seq, at, session_secs, kind, agent_id, phase, task_id, data)
  SELECT seq, at, session_secs, kind, agent_id, phase, task_id, data FROM events;
DROP TABLE events;
ALTER TABLE events_v6 RENAME TO events;
CREATE INDEX events_kind ON events(kind);
"#,
    // Each agent's read offset in its `events.jsonl`, committed with the tool calls read up to
    // it: a resumed session reads on from there instead of counting the file again.
    r#"
ALTER TABLE agents ADD COLUMN events_offset INTEGER NOT NULL DEFAULT 0;
"#,
    // The session's recovery state (open recoveries, escalations, a pause, the tasks' recovery
    // fields) as one JSON document, like the budget state: a resume needs only session.db.
    r#"
CREATE TABLE recovery_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL
);
"#,
    // Evaluations (acceptance suite, coverage, doc coverage, security scan, performance) at
    // phase ends, one JSON document each (`eval::evaluation::Evaluation`).
    r#"
CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    phase TEXT NOT NULL,
    at TEXT NOT NULL,
    session_secs REAL NOT NULL,
    document TEXT NOT NULL
);
"#,
    // Consensus votes and their ballots (`swarm::consensus`): review votes on done tasks.
    r#"
CREATE TABLE votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    phase TEXT NOT NULL,
    author TEXT,
    strategy TEXT NOT NULL,
    min_votes INTEGER NOT NULL,
    threshold REAL NOT NULL,
    voters TEXT NOT NULL,
    opened_session_secs REAL NOT NULL,
    closed_session_secs REAL,
    outcome TEXT NOT NULL DEFAULT 'open',
    reason TEXT
);
CREATE TABLE ballots (
    vote_id INTEGER NOT NULL REFERENCES votes(id),
    voter TEXT NOT NULL,
    role TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('approve','reject','abstain')),
    weight REAL NOT NULL,
    reason TEXT NOT NULL,
    via TEXT NOT NULL,
    session_secs REAL NOT NULL,
    PRIMARY KEY (vote_id, voter)
);
"#,
    // The final report (`final_report.json`'s document), so that `megatest report` rebuilds
    // every report from session.db alone.
    r#"
CREATE TABLE final_report (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    document TEXT NOT NULL
);
"#,
    // A forked session's origin (`megatest fork`): source session, directory and checkpoint.
    r#"
ALTER TABLE sessions ADD COLUMN forked_from TEXT;
"#,
];
