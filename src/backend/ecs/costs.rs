//! What ECS Fargate tasks cost: each task's vCPU and memory times its billed duration times
//! the region's per-hour prices (Fargate, or Fargate Spot for tasks on FARGATE_SPOT). Pure.
//!
//! Billing follows AWS's Fargate pricing page: from the start of the image pull (or the task's
//! start when that is not reported) to the task's stop, per second, one minute at least. A
//! price that is not in the table makes the cost `null` with the reason — never 0. Spot prices
//! change with the market, so no Spot price is built in: give them with `--prices FILE`.

use crate::figure::Figure;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per-hour prices of one region (Linux, x86), USD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPrices {
    /// Fargate, per vCPU-hour.
    pub vcpu_hour: Option<f64>,
    /// Fargate, per GB-hour of memory.
    pub gb_hour: Option<f64>,
    /// Fargate Spot, per vCPU-hour.
    pub spot_vcpu_hour: Option<f64>,
    /// Fargate Spot, per GB-hour.
    pub spot_gb_hour: Option<f64>,
}

/// Prices by region: `[regions.<name>]` tables of [`RegionPrices`] (the `--prices` file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Region name → prices.
    pub regions: BTreeMap<String, RegionPrices>,
}

impl Default for PriceTable {
    /// On-demand list prices of AWS's Fargate pricing page (Linux/x86) for regions that share
    /// them; no Spot prices (they move).
    fn default() -> Self {
        let on_demand = RegionPrices {
            vcpu_hour: Some(0.04048),
            gb_hour: Some(0.004445),
            spot_vcpu_hour: None,
            spot_gb_hour: None,
        };
        let regions = ["us-east-1", "us-east-2", "us-west-2", "eu-west-1"]
            .into_iter()
            .map(|r| (r.to_string(), on_demand.clone()))
            .collect();
        PriceTable { regions }
    }
}

impl PriceTable {
    /// The default table with `file`'s regions laid over it (a region's keys replace the
    /// default's). Errors: the TOML error with its line.
    pub fn with_file(text: &str) -> Result<PriceTable, String> {
        let given: PriceTable = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut table = PriceTable::default();
        table.regions.extend(given.regions);
        Ok(table)
    }
}

/// One task as billed: its size, market and times (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskUsage {
    /// CPU units (1024 = 1 vCPU).
    pub cpu_units: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// On FARGATE_SPOT.
    pub spot: bool,
    /// When billing starts (image pull started, else the task started); None: not started,
    /// or not reported.
    pub billing_start: Option<f64>,
    /// When the task was created (None: not reported).
    pub created: Option<f64>,
    /// When it stopped (None: still running).
    pub stopped: Option<f64>,
}

/// A task's cost.
#[derive(Debug, Clone, Serialize)]
pub struct TaskCost {
    /// Billed seconds (per second, at least 60; 0 when never started).
    pub billed_secs: f64,
    /// Still running: the cost so far.
    pub running: bool,
    /// USD, or null with the reason.
    pub cost_usd: Figure<f64>,
}

/// Billed seconds of `usage` at `now` (Unix seconds).
pub fn billed_secs(usage: &TaskUsage, now: f64) -> f64 {
    match usage.billing_start {
        None => 0.0,
        Some(start) => {
            let end = usage.stopped.unwrap_or(now);
            (end - start).max(0.0).ceil().max(60.0)
        }
    }
}

/// The cost of `usage` in `region` at `now`.
pub fn task_cost(usage: &TaskUsage, table: &PriceTable, region: &str, now: f64) -> TaskCost {
    let billed = billed_secs(usage, now);
    let running = usage.billing_start.is_some() && usage.stopped.is_none();
    let market = if usage.spot {
        "Fargate Spot"
    } else {
        "Fargate"
    };
    let prices = table.regions.get(region);
    let (vcpu, gb) = match prices {
        Some(p) if usage.spot => (p.spot_vcpu_hour, p.spot_gb_hour),
        Some(p) => (p.vcpu_hour, p.gb_hour),
        None => (None, None),
    };
    let cost_usd = match (vcpu, gb) {
        // Stopped before it ever started (ECS reported its creation and its stop, no start).
        _ if usage.billing_start.is_none()
            && usage.created.is_some()
            && usage.stopped.is_some() =>
        {
            Figure::measured(0.0)
        }
        _ if usage.billing_start.is_none() => {
            Figure::missing("ECS reported no start time for the task (and so no billed time)")
        }
        (Some(vcpu), Some(gb)) => {
            let hours = billed / 3600.0;
            let vcpus = f64::from(usage.cpu_units) / 1024.0;
            let gbs = f64::from(usage.memory_mib) / 1024.0;
            Figure::measured(vcpus * hours * vcpu + gbs * hours * gb)
        }
        _ => Figure::missing(format!(
            "no {market} price for {region} in the price table (give one with --prices FILE)"
        )),
    };
    TaskCost {
        billed_secs: billed,
        running,
        cost_usd,
    }
}

/// The sum of `costs`: null (with the first reason) when any is null.
pub fn total(costs: &[TaskCost]) -> Figure<f64> {
    let mut sum = 0.0;
    for cost in costs {
        match (&cost.cost_usd.value, &cost.cost_usd.reason) {
            (Some(value), _) => sum += value,
            (None, reason) => {
                return Figure::missing(format!(
                    "a task's cost is unknown: {}",
                    reason.as_deref().unwrap_or("no price")
                ))
            }
        }
    }
    Figure::measured(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(minutes: f64, spot: bool) -> TaskUsage {
        TaskUsage {
            cpu_units: 2048,
            memory_mib: 8192,
            spot,
            billing_start: Some(1_000.0),
            created: Some(990.0),
            stopped: Some(1_000.0 + minutes * 60.0),
        }
    }

    #[test]
    fn ten_sessions_of_thirty_minutes_cost_what_a_hand_calculation_says() {
        let table = PriceTable::default();
        let costs: Vec<TaskCost> = (0..10)
            .map(|_| task_cost(&task(30.0, false), &table, "us-east-1", 0.0))
            .collect();
        // By hand: 2 vCPU × 0.5 h × $0.04048 + 8 GB × 0.5 h × $0.004445 = $0.05826 a task.
        let each = 2.0 * 0.5 * 0.04048 + 8.0 * 0.5 * 0.004445;
        assert!((costs[0].cost_usd.value.unwrap() - each).abs() < 1e-12);
        assert!((total(&costs).value.unwrap() - 10.0 * each).abs() < 1e-9);
        assert_eq!(costs[0].billed_secs, 1800.0);
    }

    #[test]
    fn spot_without_a_price_is_null_never_zero_and_a_minute_is_the_least() {
        let table = PriceTable::default();
        let spot = task_cost(&task(30.0, true), &table, "us-east-1", 0.0);
        assert_eq!(spot.cost_usd.value, None);
        assert!(spot
            .cost_usd
            .reason
            .as_deref()
            .unwrap()
            .contains("Fargate Spot"));
        assert_eq!(
            task_cost(&task(30.0, false), &table, "ap-south-2", 0.0)
                .cost_usd
                .value,
            None
        );
        assert_eq!(total(std::slice::from_ref(&spot)).value, None);
        assert_eq!(billed_secs(&task(0.1, false), 0.0), 60.0);
        // No start reported: unknown (null), unless it stopped before it started.
        let mut unknown = task(30.0, false);
        unknown.billing_start = None;
        unknown.created = None;
        assert_eq!(
            task_cost(&unknown, &table, "us-east-1", 0.0).cost_usd.value,
            None
        );
        unknown.created = Some(990.0);
        assert_eq!(
            task_cost(&unknown, &table, "us-east-1", 0.0).cost_usd.value,
            Some(0.0)
        );
        // A running task costs what it used so far.
        let mut running = task(0.0, false);
        running.stopped = None;
        let cost = task_cost(&running, &table, "us-east-1", 1_000.0 + 7200.0);
        assert!(cost.running && cost.billed_secs == 7200.0);
        let table = PriceTable::with_file(
            "[regions.us-east-1]\nvcpu_hour = 0.04048\ngb_hour = 0.004445\nspot_vcpu_hour = 0.012\nspot_gb_hour = 0.0013\n",
        )
        .unwrap();
        let spot = task_cost(&task(60.0, true), &table, "us-east-1", 0.0);
        assert!((spot.cost_usd.value.unwrap() - (2.0 * 0.012 + 8.0 * 0.0013)).abs() < 1e-12);
        assert!(PriceTable::with_file("[regions.x]\nvcpu = 1\n").is_err());
    }
}
