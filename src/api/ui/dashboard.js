// megatest live dashboard. Served by the control API from the binary; talks only to the
// server that served it, signed in by an HttpOnly cookie (the token is posted once to
// /api/login and never kept here). Everything the session wrote is shown as text, or as
// markup the server escaped and drew (the report's views); the page policy forbids any other
// script.
"use strict";

(() => {
  const $ = (selector) => document.querySelector(selector);
  const api = (path, options = {}) =>
    fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store" }, options));
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---- the sign-in page ---------------------------------------------------------------
  const loginForm = $("#login");
  if (loginForm) {
    loginForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = $("#token").value.trim();
      $("#login-error").textContent = "";
      let answer;
      try {
        answer = await api("/api/login", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ token }),
        });
      } catch (err) {
        $("#login-error").textContent = "The session's daemon does not answer (has it ended?).";
        return;
      }
      $("#token").value = "";
      if (answer.ok) {
        location.replace("/");
        return;
      }
      const body = await answer.json().catch(() => ({}));
      $("#login-error").textContent =
        (body.error && body.error.message) || `sign-in refused (${answer.status})`;
    });
    return;
  }
  if (!$("#dashboard")) return;

  // ---- state --------------------------------------------------------------------------
  let ended = false; // session_ended seen: the daemon is gone, nothing more to ask
  let stopping = false; // a stop is under way: only the event stream is followed
  let state = "connecting";
  let refreshTimer = null;
  let refreshing = false;
  let lastEventId = 0;
  let logAgent = null;
  let logOffset = null;
  let logTimer = null;
  const drawn = new Map(); // view name → the fragment last drawn into it
  const numbers = new Intl.NumberFormat("en");
  const FEED_ROWS = 200;
  const LOG_KEEP_CHARS = 400000;

  const duration = (secs) => {
    if (typeof secs !== "number" || !isFinite(secs)) return "–";
    const s = Math.max(0, Math.round(secs));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
    if (m > 0) return `${m}m ${String(r).padStart(2, "0")}s`;
    return `${r}s`;
  };
  const figureValue = (figure) =>
    figure && typeof figure === "object" ? figure.value : figure;

  function setFigure(name, value, text) {
    for (const el of document.querySelectorAll(`[data-figure="${name}"]`)) {
      el.dataset.value = value === null || value === undefined ? "" : String(value);
      el.textContent =
        text !== undefined ? text : value === null || value === undefined ? "–" : numbers.format(value);
    }
  }

  // The figures of a metrics document (status.metrics while running; the session_ended
  // event's metrics at the end: the same numbers `megatest status` shows).
  function showMetrics(metrics) {
    if (!metrics) return;
    setFigure("total_tokens", metrics.total_tokens);
    setFigure("model_calls", metrics.model_calls);
    setFigure("tool_calls", metrics.tool_calls);
    const tasks = metrics.tasks || {};
    setFigure("tasks_done", tasks.done);
    setFigure("tasks_total", tasks.total);
    setFigure("tasks_failed", tasks.failed);
    setFigure("checkpoints", metrics.checkpoints);
    setFigure("elapsed", metrics.elapsed_session_secs, duration(metrics.elapsed_session_secs));
    setFigure("remaining", metrics.remaining_session_secs, duration(metrics.remaining_session_secs));
  }

  function setState(word) {
    state = word || "unknown";
    const badge = $("#state");
    badge.textContent = state;
    badge.dataset.state = state;
    badge.className = `verdict state-${state.replace(/[^a-z_]/g, "")}`;
    const live = !ended && !stopping && state !== "stopping";
    const enable = (action, on) => {
      const button = document.querySelector(`[data-action="${action}"]`);
      if (button) button.disabled = !on;
    };
    enable("checkpoint", live && state !== "paused");
    enable("pause", live && state !== "paused");
    enable("continue", live && state === "paused");
    enable("stop", live);
    for (const button of document.querySelectorAll("[data-escalation]")) button.disabled = !live;
  }

  function notice(text, ok) {
    const el = $("#notice");
    el.textContent = text;
    el.className = ok ? "ok" : "bad";
  }

  // ---- the views ----------------------------------------------------------------------
  function render(data) {
    const status = data.status;
    $("#session-id").textContent = status.session_id;
    document.title = `megatest ${status.session_id} — ${status.status}`;
    if (status.status === "stopping") stopping = true;
    const phase = status.phase
      ? `phase ${status.phase} (${status.phase_index + 1} of ${status.phase_count}), ` +
        `${duration(status.phase_elapsed_session_secs)} of its ${duration(status.phase_planned_session_secs)}`
      : "between phases";
    $("#phase-line").textContent =
      `${phase} · session time ×${status.time_scale} wall time · ` +
      `${(status.agents || []).length} agents · last checkpoint ` +
      (status.last_checkpoint ? `#${status.last_checkpoint.seq} (${status.last_checkpoint.trigger})` : "none yet");
    setFigure("phase", status.phase, status.phase || "–");
    showMetrics(status.metrics);
    const cost = figureValue(status.budget && status.budget.cost_usd);
    setFigure("cost", cost, typeof cost === "number" ? `$${cost.toFixed(4)}` : "unknown (no price)");
    setFigure("recoveries", status.recoveries ? status.recoveries.total : null);
    // Server-drawn, escaped fragments (report::live::views).
    // A view is redrawn only when its fragment changed: a button under the pointer is not
    // replaced between press and release.
    for (const [name, html] of Object.entries(data.views || {})) {
      const el = $(`#view-${name}`);
      if (el && drawn.get(name) !== html) {
        el.innerHTML = html;
        drawn.set(name, html);
      }
    }
    setState(status.status);
    logTabs((status.agents || []).map((agent) => agent.id));
  }

  async function refresh() {
    refreshTimer = null;
    if (ended || stopping || refreshing) return;
    refreshing = true;
    try {
      const answer = await api("/api/dashboard");
      if (answer.status === 401 || answer.status === 403) {
        location.replace("/");
        return;
      }
      if (answer.ok) {
        const data = await answer.json();
        if (!ended) render(data);
        return data;
      }
    } catch (err) {
      // The daemon is going away; the event stream tells how it ended.
    } finally {
      refreshing = false;
    }
    return null;
  }

  // At most one refresh a second, however fast the events come.
  function schedule() {
    if (!refreshTimer && !ended && !stopping) refreshTimer = setTimeout(refresh, 1000);
  }

  // ---- the event stream (server-sent events, read with fetch to carry Last-Event-ID) ---
  function eventRow(event) {
    const row = document.createElement("tr");
    const details = JSON.stringify(event.data);
    for (const text of [
      event.id,
      duration(event.session_secs),
      event.kind,
      event.agent_id || "",
      event.task_id || "",
      details && details.length > 300 ? `${details.slice(0, 300)}…` : details || "",
    ]) {
      const cell = document.createElement("td");
      cell.textContent = String(text);
      row.appendChild(cell);
    }
    row.title = details || "";
    const feed = $("#event-feed");
    feed.insertBefore(row, feed.firstChild);
    while (feed.childElementCount > FEED_ROWS) feed.removeChild(feed.lastChild);
  }

  function onEvent(event) {
    lastEventId = Math.max(lastEventId, event.id);
    eventRow(event);
    if (event.kind === "session_ended") {
      finish(event.data || {});
    } else {
      schedule();
    }
  }

  function parseBlock(block) {
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (data.length === 0) return; // a keep-alive comment
    try {
      onEvent(JSON.parse(data.join("\n")));
    } catch (err) {
      // Not an event of ours: ignore it.
    }
  }

  async function follow() {
    let failures = 0;
    while (!ended) {
      try {
        const answer = await api("/api/events", { headers: { "Last-Event-ID": String(lastEventId) } });
        if (answer.status === 401 || answer.status === 403) {
          location.replace("/");
          return;
        }
        if (!answer.ok || !answer.body) throw new Error(`events: ${answer.status}`);
        failures = 0;
        const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            parseBlock(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        }
      } catch (err) {
        failures += 1;
      }
      if (ended) return;
      // The stream closed without the session's end: the daemon died or restarts.
      if (failures >= 3) {
        setState("unreachable");
        notice("The session's daemon does not answer: it ended or crashed (megatest status tells which).", false);
        stopTimers();
        return;
      }
      await sleep(2000);
    }
  }

  function stopTimers() {
    clearTimeout(refreshTimer);
    refreshTimer = null;
    clearTimeout(logTimer);
    logTimer = null;
  }

  function finish(data) {
    ended = true;
    stopTimers();
    showMetrics(data.metrics);
    setState(data.status || "ended");
    const banner = document.createElement("div");
    banner.className = "banner";
    banner.id = "ended";
    banner.textContent =
      `The session ended: ${data.status}, exit code ${data.exit_code} (${data.because}). ` +
      "Its report is report.html in the session directory; megatest report and megatest status work on it.";
    $("header").appendChild(banner);
    document.title = `megatest ${$("#session-id").textContent} — ${data.status}`;
  }

  // ---- agent logs ----------------------------------------------------------------------
  function logTabs(agents) {
    const tabs = $("#log-tabs");
    const have = [...tabs.children].map((button) => button.dataset.agent);
    if (have.join("\n") !== agents.join("\n")) {
      tabs.replaceChildren();
      for (const agent of agents) {
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.agent = agent;
        button.setAttribute("role", "tab");
        button.textContent = agent;
        button.addEventListener("click", () => showLog(agent));
        tabs.appendChild(button);
      }
    }
    if (logAgent === null && agents.length > 0) showLog(agents[0]);
    for (const button of tabs.children) {
      button.setAttribute("aria-selected", String(button.dataset.agent === logAgent));
    }
  }

  function showLog(agent) {
    logAgent = agent;
    logOffset = null;
    $("#log").textContent = "";
    for (const button of $("#log-tabs").children) {
      button.setAttribute("aria-selected", String(button.dataset.agent === agent));
    }
    clearTimeout(logTimer);
    pollLog();
  }

  async function pollLog() {
    logTimer = null;
    if (!logAgent || ended || stopping) return;
    const agent = logAgent;
    const query = logOffset === null ? "" : `?after=${logOffset}`;
    try {
      const answer = await api(`/api/agents/${encodeURIComponent(agent)}/log${query}`);
      if (answer.ok && agent === logAgent) {
        const chunk = await answer.json();
        const pre = $("#log");
        if (logOffset !== null && chunk.from !== logOffset) pre.textContent = ""; // a new log
        if (chunk.text) {
          let text = pre.textContent + chunk.text;
          if (text.length > LOG_KEEP_CHARS) text = text.slice(text.length - LOG_KEEP_CHARS);
          pre.textContent = text;
          if ($("#log-follow").checked) pre.scrollTop = pre.scrollHeight;
        }
        logOffset = chunk.to;
        // More is waiting: read on at once.
        if (chunk.to < chunk.size) {
          logTimer = setTimeout(pollLog, 0);
          return;
        }
      }
    } catch (err) {
      // The daemon is going away.
    }
    if (!ended && !stopping) logTimer = setTimeout(pollLog, 1500);
  }

  // ---- operator actions, each confirmed ------------------------------------------------
  const ACTIONS = {
    checkpoint: {
      title: "Take a checkpoint now?",
      text: "The agents are frozen while the workspace, the board and the working memory are saved; then they go on.",
      path: "/api/checkpoint",
    },
    pause: {
      title: "Pause the session?",
      text: "The agents' processes are stopped and their model calls held until you continue. Session time stops too.",
      path: "/api/pause",
    },
    continue: {
      title: "Continue the session?",
      text: "The agents' processes and their held model calls go on.",
      path: "/api/continue",
    },
    stop: {
      title: "Stop the session?",
      text: "A final checkpoint is taken, the agents are stopped and the report is written. The session can be resumed later (megatest resume).",
      path: "/api/stop",
    },
  };

  function confirmed(title, text) {
    const dialog = $("#confirm");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      $("#confirm-cancel").focus();
    });
  }

  async function post(path, body) {
    const options = { method: "POST" };
    if (body !== undefined) {
      options.headers = { "content-type": "application/json" };
      options.body = JSON.stringify(body);
    }
    const answer = await api(path, options);
    const document_ = await answer.json().catch(() => ({}));
    return { ok: answer.ok, status: answer.status, body: document_ };
  }

  function describe(action, body) {
    if (action === "checkpoint" && body.sequence !== undefined) return `Checkpoint #${body.sequence} written.`;
    if (action === "stop") return "Stopping: final checkpoint, then the report. The page shows the end.";
    if (body.status) return `The session is ${body.status}.`;
    return "Done.";
  }

  async function act(action) {
    const spec = ACTIONS[action];
    if (!spec || !(await confirmed(spec.title, spec.text))) return;
    if (action === "stop") {
      stopping = true; // from here on only the event stream is followed
      stopTimers();
      setState("stopping");
    }
    notice(`${spec.title.replace("?", "")}…`, true);
    try {
      const answer = await post(spec.path);
      if (answer.ok) {
        notice(describe(action, answer.body), true);
      } else {
        notice((answer.body.error && answer.body.error.message) || `refused (${answer.status})`, false);
      }
    } catch (err) {
      notice("The daemon did not answer.", false);
    }
    if (action !== "stop") refresh();
  }

  async function decide(id, decision) {
    const title = decision === "stop" ? `Stop the session (escalation #${id})?` : `Continue past escalation #${id}?`;
    const text =
      decision === "stop"
        ? "The session stops with exit code 3 and the report says why."
        : "The held task is released and the session goes on.";
    if (!(await confirmed(title, text))) return;
    try {
      const answer = await post(`/api/escalations/${id}/decision`, { decision });
      notice(
        answer.ok
          ? `Escalation #${id}: ${decision}.`
          : (answer.body.error && answer.body.error.message) || `refused (${answer.status})`,
        answer.ok,
      );
    } catch (err) {
      notice("The daemon did not answer.", false);
    }
    refresh();
  }

  document.addEventListener("click", (event) => {
    const target = event.target.closest("button");
    if (!target || target.disabled) return;
    if (target.dataset.action) act(target.dataset.action);
    else if (target.dataset.escalation) decide(Number(target.dataset.escalation), target.dataset.decision);
  });

  $("#logout").addEventListener("click", async () => {
    stopTimers();
    ended = true;
    try {
      await post("/api/logout");
    } finally {
      location.replace("/");
    }
  });

  // ---- start: the views now, then the last events and everything after them -------------
  (async () => {
    const first = await refresh();
    if (first) lastEventId = Math.max(0, first.last_event_id - 50);
    follow();
  })();
})();
