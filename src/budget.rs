//! Budgets from `[limits]` (and `[model].max_cost_usd`), enforced at admission time.
//!
//! Theory of operation: before a model call is dispatched the proxy asks the session to reserve
//! `prompt estimate + max_tokens` tokens ([`Budgets::reserve`]); after it, the reservation is
//! reconciled to the upstream's actual usage ([`Budgets::reconcile`]). Because the session task
//! is the only writer, check-and-reserve is one step: agents released at the same instant cannot
//! overshoot `total_token_budget` (as long as the upstream stays within `max_tokens` and the
//! prompt estimate, which is deliberately generous: `proxy::wire::estimate_prompt_tokens`).
//!
//! Per-agent rates are token buckets on the session clock: `tokens_per_agent_per_hour` throttles
//! (the call waits until the bucket allows it); `tool_calls_per_agent_per_hour` first asks the
//! agent to batch its operations (a system note on its next request), then throttles once it is
//! more than 10 % over.

use crate::config::raw::Price;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Built-in prices, USD per million tokens: the providers' public list prices (input, output,
/// cached input). `[model.prices]` entries override and extend them. A model is matched by the
/// longest entry that is a prefix of its name (`gpt-4o-2024-08-06` → `gpt-4o`).
pub const DEFAULT_PRICES: &[(&str, f64, f64, f64)] = &[
    ("gpt-4o", 2.50, 10.00, 1.25),
    ("gpt-4o-mini", 0.15, 0.60, 0.075),
    ("gpt-4.1", 2.00, 8.00, 0.50),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025),
    ("o3-mini", 1.10, 4.40, 0.55),
    ("o4-mini", 1.10, 4.40, 0.275),
    ("claude-3-5-haiku", 0.80, 4.00, 0.08),
    ("claude-3-5-sonnet", 3.00, 15.00, 0.30),
    ("claude-3-7-sonnet", 3.00, 15.00, 0.30),
    ("claude-sonnet-4", 3.00, 15.00, 0.30),
    ("claude-opus-4", 15.00, 75.00, 1.50),
];

/// The price table: defaults overlaid with `[model.prices]`.
pub fn price_table(configured: &BTreeMap<String, Price>) -> BTreeMap<String, Price> {
    let mut table: BTreeMap<String, Price> = DEFAULT_PRICES
        .iter()
        .map(|&(name, input, output, cached)| {
            (
                name.to_string(),
                Price {
                    input,
                    output,
                    cached_input: Some(cached),
                },
            )
        })
        .collect();
    table.extend(configured.iter().map(|(k, v)| (k.clone(), *v)));
    table
}

/// [`cost_usd`] of a ledger row (its served model and token counts).
pub fn row_cost_usd(table: &BTreeMap<String, Price>, row: &crate::store::LedgerRow) -> Option<f64> {
    cost_usd(
        table,
        &row.model_served,
        row.prompt_tokens,
        row.completion_tokens,
        row.cached_tokens,
    )
}

/// USD cost of one call, or None when `model` has no price. Cached prompt tokens are part of
/// `prompt_tokens` and billed at the cached rate.
pub fn cost_usd(
    table: &BTreeMap<String, Price>,
    model: &str,
    prompt: u64,
    completion: u64,
    cached: u64,
) -> Option<f64> {
    let price = table
        .iter()
        .filter(|(name, _)| model.starts_with(name.as_str()))
        .max_by_key(|(name, _)| name.len())
        .map(|(_, price)| price)?;
    let cached = cached.min(prompt);
    let uncached = (prompt - cached) as f64;
    let cached_rate = price.cached_input.unwrap_or(price.input);
    Some(
        (uncached * price.input + cached as f64 * cached_rate + completion as f64 * price.output)
            / 1_000_000.0,
    )
}

/// Fraction of the token budget at which the one `budget_alert` event is raised.
pub const ALERT_FRACTION: f64 = 0.8;
/// Tool-call overdraft (fraction of the hourly rate) after which an agent is throttled.
pub const TOOL_THROTTLE_OVERDRAFT: f64 = 0.1;

/// A token bucket refilled on session time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bucket {
    /// Most units it holds (the hourly rate).
    pub capacity: f64,
    /// Units available now; negative while an overdraft is being waited out.
    pub level: f64,
    /// Units per session second.
    pub refill: f64,
    /// Session seconds of the last refill.
    pub updated_secs: f64,
}

impl Bucket {
    /// A full bucket of `per_hour` units refilled at `per_hour` per session hour.
    pub fn per_hour(per_hour: u64) -> Bucket {
        Bucket {
            capacity: per_hour as f64,
            level: per_hour as f64,
            refill: per_hour as f64 / 3600.0,
            updated_secs: 0.0,
        }
    }

    fn refill_to(&mut self, now_secs: f64) {
        let elapsed = (now_secs - self.updated_secs).max(0.0);
        self.level = (self.level + elapsed * self.refill).min(self.capacity);
        self.updated_secs = now_secs;
    }

    /// Take `amount` (the level may go negative); returns the session seconds to wait until the
    /// level is back at zero.
    fn take(&mut self, amount: f64, now_secs: f64) -> f64 {
        self.refill_to(now_secs);
        self.level -= amount;
        if self.level >= 0.0 {
            0.0
        } else {
            -self.level / self.refill
        }
    }

    fn give_back(&mut self, amount: f64, now_secs: f64) {
        self.refill_to(now_secs);
        self.level = (self.level + amount).min(self.capacity);
    }
}

/// The answer to a reservation request.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Admitted, with its reservation id.
    Granted {
        /// The reservation to reconcile after the call.
        id: u64,
        /// Session seconds the call must wait first (throttling).
        wait_session_secs: f64,
        /// Add the "batch your operations" system note to this request.
        batch_note: bool,
        /// Add the recovery table's corrective note (`retry_with_modification` after a
        /// malformed answer); set by the session, never by the budgets.
        corrective_note: bool,
    },
    /// Outstanding reservations hold the rest of the budget; retry when they reconcile.
    Busy,
    /// The budget cannot fit this call even with nothing outstanding.
    Exhausted {
        /// Which budget and its figures.
        message: String,
    },
}

/// Something the session must act on after a reservation or reconciliation.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetSignal {
    /// The token budget reached [`ALERT_FRACTION`] (raised once).
    Alert {
        /// Tokens used.
        used: u64,
        /// The token budget.
        total: u64,
    },
    /// A budget is used up: the session ends (`budget`).
    Exhausted {
        /// Which budget and its figures.
        message: String,
    },
}

/// Tokens held for one admitted call until it is reconciled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservation {
    /// The calling agent.
    pub agent_idx: usize,
    /// Tokens held (prompt estimate + `max_tokens`).
    pub tokens: u64,
}

/// All budget state. Serialised into `session.db` (`budget_state`) on every metrics tick, at the
/// end, and at once on rare changes (alert, exhaustion, throttling, agent-reported tool calls);
/// not with every model call: the ledger rows after [`Budgets::ledger_seq`] are replayed into it
/// on resume ([`Budgets::replay`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Budgets {
    /// The last ledger row counted in this state; None in a state saved by a megatest that
    /// wrote the state with every row (then it counts every row).
    #[serde(default)]
    pub ledger_seq: Option<i64>,
    /// `[limits].total_token_budget`.
    pub total_tokens: u64,
    /// Tokens used by reconciled calls (the ledger's figures).
    pub used_tokens: u64,
    /// Tokens held by outstanding reservations.
    pub reserved_tokens: u64,
    /// Outstanding reservations by id.
    pub reservations: BTreeMap<u64, Reservation>,
    /// The next reservation id.
    pub next_id: u64,
    /// The 80 % alert was raised.
    pub alerted: bool,
    /// Why the budget is exhausted, once it is.
    pub exhausted: Option<String>,
    /// `[model].max_cost_usd`.
    pub max_cost_usd: Option<f64>,
    /// Cost of the calls whose model has a price.
    pub cost_usd: f64,
    /// Calls whose model has no price (their cost is unknown, never 0).
    pub unpriced_calls: u64,
    /// Per agent: tokens per session hour (`[limits].tokens_per_agent_per_hour`).
    pub token_buckets: Vec<Bucket>,
    /// Per agent: tool calls per session hour (`[limits].tool_calls_per_agent_per_hour`).
    pub tool_buckets: Vec<Bucket>,
    /// Session seconds each agent was made to wait, summed.
    pub throttled_secs: Vec<f64>,
}

impl Budgets {
    /// Fresh budgets for `agents` agents under `limits`.
    pub fn new(
        limits: &crate::config::raw::Limits,
        max_cost_usd: Option<f64>,
        agents: usize,
    ) -> Budgets {
        Budgets {
            ledger_seq: Some(0),
            total_tokens: limits.total_token_budget,
            used_tokens: 0,
            reserved_tokens: 0,
            reservations: BTreeMap::new(),
            next_id: 1,
            alerted: false,
            exhausted: None,
            max_cost_usd,
            cost_usd: 0.0,
            unpriced_calls: 0,
            token_buckets: vec![Bucket::per_hour(limits.tokens_per_agent_per_hour); agents],
            tool_buckets: vec![Bucket::per_hour(limits.tool_calls_per_agent_per_hour); agents],
            throttled_secs: vec![0.0; agents],
        }
    }

    /// Per-agent rates for agents up to `agents` (dynamic spawning adds agents; a resumed
    /// session's saved state may predate its newest ones). A new agent starts with a full
    /// bucket, like every agent at the session's start. Never removes an agent's buckets.
    pub fn ensure_agents(&mut self, agents: usize, limits: &crate::config::raw::Limits) {
        while self.token_buckets.len() < agents {
            self.token_buckets
                .push(Bucket::per_hour(limits.tokens_per_agent_per_hour));
        }
        while self.tool_buckets.len() < agents {
            self.tool_buckets
                .push(Bucket::per_hour(limits.tool_calls_per_agent_per_hour));
        }
        if self.throttled_secs.len() < agents {
            self.throttled_secs.resize(agents, 0.0);
        }
    }

    /// New limits (a config reload): totals and per-agent rates change, what was used and
    /// reserved stays. A raised budget lifts an exhaustion the old one caused.
    pub fn set_limits(&mut self, limits: &crate::config::raw::Limits, max_cost_usd: Option<f64>) {
        self.total_tokens = limits.total_token_budget;
        self.max_cost_usd = max_cost_usd;
        for (buckets, per_hour) in [
            (&mut self.token_buckets, limits.tokens_per_agent_per_hour),
            (&mut self.tool_buckets, limits.tool_calls_per_agent_per_hour),
        ] {
            for bucket in buckets.iter_mut() {
                bucket.capacity = per_hour as f64;
                bucket.refill = per_hour as f64 / 3600.0;
                bucket.level = bucket.level.min(bucket.capacity);
            }
        }
        if self.used_tokens < self.total_tokens
            && self.max_cost_usd.is_none_or(|max| self.cost_usd < max)
        {
            self.exhausted = None;
        }
        self.alerted = self.used_tokens as f64 >= 0.8 * self.total_tokens as f64;
    }

    /// Reserve `tokens` for one call of agent `agent_idx` at session time `now_secs`.
    pub fn reserve(&mut self, agent_idx: usize, tokens: u64, now_secs: f64) -> Admission {
        if let Some(message) = &self.exhausted {
            return Admission::Exhausted {
                message: message.clone(),
            };
        }
        if self.used_tokens + tokens > self.total_tokens {
            let message = format!(
                "token budget exhausted: {} of {} tokens used; a call needing up to {tokens} more cannot fit (limits.total_token_budget)",
                self.used_tokens, self.total_tokens
            );
            self.exhausted = Some(message.clone());
            return Admission::Exhausted { message };
        }
        if self.used_tokens + self.reserved_tokens + tokens > self.total_tokens {
            return Admission::Busy;
        }
        if let Some(limit) = self.max_cost_usd {
            if self.cost_usd >= limit {
                let message = format!(
                    "cost budget exhausted: ${:.4} of ${limit:.2} spent ([model].max_cost_usd)",
                    self.cost_usd
                );
                self.exhausted = Some(message.clone());
                return Admission::Exhausted { message };
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.reserved_tokens += tokens;
        self.reservations
            .insert(id, Reservation { agent_idx, tokens });
        let token_wait = self.token_buckets[agent_idx].take(tokens as f64, now_secs);
        let tools = &mut self.tool_buckets[agent_idx];
        tools.refill_to(now_secs);
        let batch_note = tools.level < 0.0;
        let tool_wait = if tools.level < -tools.capacity * TOOL_THROTTLE_OVERDRAFT {
            -tools.level / tools.refill
        } else {
            0.0
        };
        let wait = token_wait.max(tool_wait);
        self.throttled_secs[agent_idx] += wait;
        Admission::Granted {
            id,
            wait_session_secs: wait,
            batch_note,
            corrective_note: false,
        }
    }

    /// Charge tool calls an agent reported itself to its tool-call bucket.
    pub fn charge_tool_calls(&mut self, agent_idx: usize, count: u64, now_secs: f64) {
        self.tool_buckets[agent_idx].take(count as f64, now_secs);
    }

    /// Count a committed ledger row this state does not hold yet (resume): as a call of
    /// `agent_idx` that used `actual_tokens` and `tool_calls` at `at_secs` would have been
    /// counted live (its reservation, long gone, netted to the actual usage).
    pub fn replay(
        &mut self,
        agent_idx: Option<usize>,
        actual_tokens: u64,
        tool_calls: u64,
        cost_usd: Option<f64>,
        at_secs: f64,
    ) {
        if let Some(agent_idx) = agent_idx.filter(|i| *i < self.token_buckets.len()) {
            self.token_buckets[agent_idx].take(actual_tokens as f64, at_secs);
            self.tool_buckets[agent_idx].take(tool_calls as f64, at_secs);
        }
        self.reconcile(None, actual_tokens, tool_calls, cost_usd, at_secs);
    }

    /// Settle reservation `id` with the call's actual usage. `cost_usd` is None for a model
    /// without a price. Returns what the session must act on.
    pub fn reconcile(
        &mut self,
        id: Option<u64>,
        actual_tokens: u64,
        tool_calls: u64,
        cost_usd: Option<f64>,
        now_secs: f64,
    ) -> Vec<BudgetSignal> {
        let mut signals = Vec::new();
        if let Some(reservation) = id.and_then(|id| self.reservations.remove(&id)) {
            self.reserved_tokens -= reservation.tokens;
            let unused = reservation.tokens.saturating_sub(actual_tokens) as f64;
            self.token_buckets[reservation.agent_idx].give_back(unused, now_secs);
            self.tool_buckets[reservation.agent_idx].take(tool_calls as f64, now_secs);
        }
        self.used_tokens += actual_tokens;
        match cost_usd {
            Some(cost) => self.cost_usd += cost,
            None if actual_tokens > 0 => self.unpriced_calls += 1,
            None => {}
        }
        if !self.alerted && self.used_tokens as f64 >= ALERT_FRACTION * self.total_tokens as f64 {
            self.alerted = true;
            signals.push(BudgetSignal::Alert {
                used: self.used_tokens,
                total: self.total_tokens,
            });
        }
        if self.exhausted.is_none() && self.used_tokens >= self.total_tokens {
            let message = format!(
                "token budget exhausted: {} of {} tokens used (limits.total_token_budget)",
                self.used_tokens, self.total_tokens
            );
            self.exhausted = Some(message);
        }
        if self.exhausted.is_none() {
            if let Some(limit) = self.max_cost_usd {
                if self.cost_usd >= limit {
                    self.exhausted = Some(format!(
                        "cost budget exhausted: ${:.4} of ${limit:.2} spent ([model].max_cost_usd)",
                        self.cost_usd
                    ));
                }
            }
        }
        if let Some(message) = &self.exhausted {
            signals.push(BudgetSignal::Exhausted {
                message: message.clone(),
            });
        }
        signals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: u64) -> crate::config::raw::Limits {
        crate::config::raw::Limits {
            total_token_budget: total,
            tokens_per_agent_per_hour: 1_000_000,
            tool_calls_per_agent_per_hour: 10,
            ..Default::default()
        }
    }

    #[test]
    fn reservations_cannot_overshoot() {
        let mut budgets = Budgets::new(&limits(1000), None, 8);
        let granted = (0..8)
            .filter(|&agent| matches!(budgets.reserve(agent, 300, 0.0), Admission::Granted { .. }))
            .count();
        assert_eq!(granted, 3);
        assert_eq!(budgets.reserve(0, 300, 0.0), Admission::Busy);
        assert_eq!(
            budgets.reserve(0, 1001, 0.0),
            Admission::Exhausted {
                message: budgets.exhausted.clone().unwrap()
            }
        );
    }

    #[test]
    fn an_added_agent_gets_full_buckets_and_existing_ones_keep_theirs() {
        let limits = limits(10_000);
        let mut budgets = Budgets::new(&limits, None, 1);
        budgets.charge_tool_calls(0, 4, 0.0);
        budgets.ensure_agents(3, &limits);
        budgets.ensure_agents(2, &limits);
        assert_eq!(budgets.token_buckets.len(), 3);
        assert_eq!(budgets.throttled_secs, vec![0.0; 3]);
        assert_eq!(budgets.tool_buckets[0].level, 6.0);
        assert_eq!(budgets.tool_buckets[2].level, 10.0);
        assert!(matches!(
            budgets.reserve(2, 100, 10.0),
            Admission::Granted { .. }
        ));
    }

    #[test]
    fn reconcile_frees_the_unused_part_and_alerts_at_80_percent() {
        let mut budgets = Budgets::new(&limits(1000), None, 1);
        let Admission::Granted { id, .. } = budgets.reserve(0, 900, 0.0) else {
            panic!()
        };
        assert!(budgets
            .reconcile(Some(id), 500, 0, Some(0.01), 1.0)
            .is_empty());
        assert_eq!((budgets.used_tokens, budgets.reserved_tokens), (500, 0));
        let Admission::Granted { id, .. } = budgets.reserve(0, 400, 1.0) else {
            panic!()
        };
        let signals = budgets.reconcile(Some(id), 350, 0, None, 2.0);
        assert_eq!(
            signals,
            vec![BudgetSignal::Alert {
                used: 850,
                total: 1000
            }]
        );
        assert_eq!(budgets.unpriced_calls, 1);
    }

    #[test]
    fn tool_calls_over_the_rate_get_a_note_then_a_wait() {
        let mut budgets = Budgets::new(&limits(1_000_000), None, 1);
        let Admission::Granted { id, .. } = budgets.reserve(0, 10, 0.0) else {
            panic!()
        };
        budgets.reconcile(Some(id), 10, 10, None, 0.0);
        let Admission::Granted {
            id,
            batch_note,
            wait_session_secs,
            ..
        } = budgets.reserve(0, 10, 0.0)
        else {
            panic!()
        };
        assert!(!batch_note && wait_session_secs == 0.0);
        budgets.reconcile(Some(id), 10, 1, None, 0.0);
        let Admission::Granted {
            id,
            batch_note,
            wait_session_secs,
            ..
        } = budgets.reserve(0, 10, 0.0)
        else {
            panic!()
        };
        assert!(batch_note && wait_session_secs == 0.0);
        budgets.reconcile(Some(id), 10, 2, None, 0.0);
        let Admission::Granted {
            batch_note,
            wait_session_secs,
            ..
        } = budgets.reserve(0, 10, 0.0)
        else {
            panic!()
        };
        // 3 over a rate of 10/h: 0.3 h of refill to get back to zero.
        assert!(batch_note);
        assert!(
            (wait_session_secs - 1080.0).abs() < 1e-6,
            "{wait_session_secs}"
        );
    }

    #[test]
    fn token_rate_throttles_with_a_wait() {
        let mut limits = limits(u64::MAX / 2);
        limits.tokens_per_agent_per_hour = 3600;
        let mut budgets = Budgets::new(&limits, None, 1);
        let Admission::Granted {
            wait_session_secs, ..
        } = budgets.reserve(0, 3600, 0.0)
        else {
            panic!()
        };
        assert_eq!(wait_session_secs, 0.0);
        let Admission::Granted {
            wait_session_secs, ..
        } = budgets.reserve(0, 60, 0.0)
        else {
            panic!()
        };
        assert!((wait_session_secs - 60.0).abs() < 1e-9);
    }

    #[test]
    fn cost_uses_the_longest_prefix_and_cached_rate() {
        let table = price_table(&BTreeMap::new());
        let cost = cost_usd(&table, "gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000, 0).unwrap();
        assert!((cost - 0.75).abs() < 1e-9);
        let cached = cost_usd(&table, "gpt-4o", 1_000_000, 0, 1_000_000).unwrap();
        assert!((cached - 1.25).abs() < 1e-9);
        assert_eq!(cost_usd(&table, "sim", 10, 10, 0), None);
    }

    #[test]
    fn cost_budget_ends_the_session_once_spent() {
        let mut budgets = Budgets::new(&limits(1_000_000), Some(0.01), 1);
        let Admission::Granted { id, .. } = budgets.reserve(0, 100, 0.0) else {
            panic!()
        };
        assert!(budgets
            .reconcile(Some(id), 100, 0, Some(0.004), 0.0)
            .is_empty());
        let Admission::Granted { id, .. } = budgets.reserve(0, 100, 0.0) else {
            panic!()
        };
        let signals = budgets.reconcile(Some(id), 100, 0, Some(0.007), 0.0);
        assert!(
            matches!(&signals[..], [BudgetSignal::Exhausted { message }] if message.contains("cost budget"))
        );
        assert!(matches!(
            budgets.reserve(0, 1, 0.0),
            Admission::Exhausted { .. }
        ));
    }
}
