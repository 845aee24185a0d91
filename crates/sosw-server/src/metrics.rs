//! Prometheus `/metrics`: per labourer what `status` says (counts, health, the limit in force, why it is held
//! back), read at each scrape; and the process's counters of what its passes and reports did.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sosw_core::flow::HeldReason;
use sosw_core::Time;
use sosw_engine::daemon::PassReport;
use sosw_engine::LabourerStatus;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LabourerLabel {
    labourer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LabourerState {
    labourer: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LabourerOutcome {
    labourer: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LabourerReason {
    labourer: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LabourerMetric {
    labourer: String,
    metric: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EssentialLabel {
    essential: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn pass_histogram() -> Histogram {
    // 1 ms .. about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The counters of this process (they start at 0 when it starts, as Prometheus expects of counters).
#[derive(Debug, Clone)]
pub struct Counters {
    invocations: Family<LabourerOutcome, Counter>,
    scavenged: Family<LabourerOutcome, Counter>,
    reports: Family<KindLabel, Counter>,
    passes: Family<EssentialLabel, Histogram, fn() -> Histogram>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            invocations: Family::default(),
            scavenged: Family::default(),
            reports: Family::default(),
            passes: Family::new_with_constructor(pass_histogram),
        }
    }
}

impl Counters {
    /// Counts what a pass did, and how long it took.
    pub fn observe_pass(&self, report: &PassReport, took: Duration) {
        match report {
            PassReport::Orchestrator(r) => {
                for l in &r.labourers {
                    for (outcome, n) in [
                        ("invoked", l.invoked + l.finished_sync),
                        ("throttled", l.throttled),
                        ("failed", l.retry_later),
                        ("dead", l.dead),
                        ("uncertain", l.uncertain),
                        ("put_back", l.put_back),
                    ] {
                        self.invocations
                            .get_or_create(&LabourerOutcome {
                                labourer: l.labourer_id.clone(),
                                outcome,
                            })
                            .inc_by(u64::from(n));
                    }
                }
                self.pass("orchestrator", took);
            }
            PassReport::Scavenger(r) => {
                for l in &r.labourers {
                    for (outcome, n) in [
                        ("archived", l.archived),
                        ("retried", l.retried),
                        ("dead", l.dead),
                        ("requeued", l.requeued),
                    ] {
                        self.scavenged
                            .get_or_create(&LabourerOutcome {
                                labourer: l.labourer_id.clone(),
                                outcome,
                            })
                            .inc_by(u64::from(n));
                    }
                }
                self.pass("scavenger", took);
            }
        }
    }

    fn pass(&self, essential: &'static str, took: Duration) {
        self.passes
            .get_or_create(&EssentialLabel { essential })
            .observe(took.as_secs_f64());
    }

    /// Counts a worker report this process recorded: `completed`, `failed` or `heartbeat`.
    pub fn observe_report(&self, kind: &'static str) {
        self.reports.get_or_create(&KindLabel { kind }).inc();
    }
}

/// What `/metrics` shows of one labourer beyond its status: the age of the task at the head of its queue.
#[derive(Debug, Clone)]
pub struct Scrape<'a> {
    pub status: &'a LabourerStatus,
    pub oldest_queued: Option<Time>,
}

/// The content type of [`render`]'s OpenMetrics text, for clients that ask for it (Prometheus does).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`text_format`]'s output: the classic Prometheus text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition, for clients that do not ask for
/// OpenMetrics (`curl`, `promtool check metrics`): a counter family is named by its samples (`…_total`), and there
/// is no `# EOF`.
pub fn text_format(openmetrics: &str) -> String {
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut out = String::with_capacity(openmetrics.len());
    for (i, line) in lines.iter().enumerate() {
        if *line == "# EOF" {
            continue;
        }
        let counter_family = |name: &str| {
            lines[i..]
                .iter()
                .take(3)
                .any(|l| *l == format!("# TYPE {name} counter"))
        };
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counter_family(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The exposition (OpenMetrics text) of the labourers' status at `now` and the counters.
pub fn render(counters: &Counters, labourers: &[Scrape<'_>], now: Time) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("sosw");
    let tasks = Family::<LabourerState, Gauge>::default();
    let oldest = Family::<LabourerLabel, FloatGauge>::default();
    let eco = Family::<LabourerLabel, Gauge>::default();
    let desired = Family::<LabourerLabel, Gauge>::default();
    let max = Family::<LabourerLabel, Gauge>::default();
    let limit = Family::<LabourerLabel, Gauge>::default();
    let held = Family::<LabourerReason, Gauge>::default();
    let metric_value = Family::<LabourerMetric, FloatGauge>::default();
    let metric_status = Family::<LabourerMetric, Gauge>::default();
    for s in labourers {
        let st = s.status;
        let id = || st.labourer_id.clone();
        let c = &st.counts;
        for (state, n) in [
            ("queued", c.queued),
            ("running", c.running),
            ("expired", c.expired),
            ("completed", c.completed),
            ("retry_waiting", c.retry_waiting),
            ("closed", c.closed_completed),
            ("dead", c.closed_dead),
        ] {
            tasks
                .get_or_create(&LabourerState { labourer: id(), state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let age = s.oldest_queued.map_or(0.0, |t| {
            (now.millis().saturating_sub(t.millis())).max(0) as f64 / 1000.0
        });
        oldest.get_or_create(&LabourerLabel { labourer: id() }).set(age);
        for reason in HeldReason::ALL {
            let on = st.held_back.iter().any(|h| h.code == reason);
            held.get_or_create(&LabourerReason {
                labourer: id(),
                reason: reason.as_str(),
            })
            .set(i64::from(on));
        }
        let Some(l) = &st.limit else { continue };
        let label = LabourerLabel { labourer: id() };
        eco.get_or_create(&label).set(i64::from(l.eco_status));
        desired.get_or_create(&label).set(i64::from(l.desired));
        max.get_or_create(&label)
            .set(i64::from(l.limit_override.unwrap_or(l.max_simultaneous_invocations)));
        limit
            .get_or_create(&label)
            .set(i64::from(l.adaptive.map_or(l.desired, |a| a.min(l.desired))));
        for m in &l.health_metrics {
            let label = LabourerMetric {
                labourer: id(),
                metric: m.name.clone(),
            };
            metric_value.get_or_create(&label).set(m.value.unwrap_or(f64::NAN));
            metric_status.get_or_create(&label).set(i64::from(m.status));
        }
    }
    registry.register("tasks", "Tasks of the labourer in each state", tasks);
    registry.register(
        "oldest_queued_age_seconds",
        "Age of the task at the head of the labourer's queue (0: the queue is empty)",
        oldest,
    );
    registry.register("eco_status", "The labourer's eco status: 0 (worst) to 4 (best)", eco);
    registry.register(
        "desired",
        "floor(max x coefficient[eco status]): the most it may run now",
        desired,
    );
    registry.register(
        "max_simultaneous_invocations",
        "The labourer's limit: the configured one, or an operator's",
        max,
    );
    registry.register(
        "limit_in_force",
        "What the labourer may run now: desired, or the adaptive limit when lower",
        limit,
    );
    registry.register(
        "held_back",
        "1 when dispatch of the labourer is held back for this reason",
        held,
    );
    registry.register(
        "health_metric_value",
        "Each health metric's last value (NaN: unreadable)",
        metric_value,
    );
    registry.register(
        "health_metric_status",
        "The eco status each health metric's value gives (its feeling)",
        metric_status,
    );
    registry.register(
        "invocations",
        "Invocations by outcome, by this process's Orchestrator passes",
        counters.invocations.clone(),
    );
    registry.register(
        "scavenged",
        "Tasks archived, retried, closed as dead or requeued by this process's Scavenger passes",
        counters.scavenged.clone(),
    );
    registry.register(
        "reports",
        "Worker reports recorded through this process, by kind",
        counters.reports.clone(),
    );
    registry.register(
        "pass_duration_seconds",
        "How long each pass of an essential took",
        counters.passes.clone(),
    );
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}
