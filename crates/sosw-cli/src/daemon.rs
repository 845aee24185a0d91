//! `sosw run`: the Orchestrator and the Scavenger on intervals until SIGINT or SIGTERM, serving the API, `/metrics`
//! and worker reports over HTTP ([`sosw_server`]) when the config has a `server` section or `--listen` is given.

use crate::app::{load_config, App};
use crate::cli::Global;
use crate::UsageError;
use anyhow::Result;
use serde_json::json;
use sosw_core::Essential;
use sosw_engine::daemon::PassReport;
use sosw_engine::{Orchestrator, Scavenger};
use std::io::Write;
/// SIGINT or SIGTERM. The handlers are installed when this is called — before the daemon says it is running — so
/// a signal sent as soon as it says so is never the default one (which would kill it mid-pass).
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("stopping: finishing what is under way");
    }
}

pub(crate) async fn daemon(g: &Global, interval: Option<f64>, listen: Option<std::net::SocketAddr>) -> Result<()> {
    if let Some(Err(e)) = interval.map(sosw_core::time::check_secs) {
        return Err(UsageError(format!("`--interval` {e}")).into());
    }
    let app = App::load(g, Essential::Orchestrator).await?;
    let shutdown = shutdown_signal();
    let scavenger_config = std::sync::Arc::new(load_config(&g.config, Essential::Scavenger).await?);
    let wiring = app.wiring();
    let served = match listen.or(app.config.server.as_ref().map(|s| s.listen)) {
        Some(addr) => Some(serve(&app, &wiring, addr).await?),
        None => None,
    };
    let counters = served.as_ref().map(|(_, service)| service.counters.clone());
    let report_url = served.as_ref().map(|(server, _)| format!("{}/report", server.url));
    let signer = served.as_ref().map(|(_, service)| {
        std::sync::Arc::new(service.report_tokens.clone()) as std::sync::Arc<dyn sosw_core::ports::ReportSigner>
    });
    let (invokers, supervisor) = app.invokers_reporting_to(&wiring, report_url.clone(), signer).await;
    let orchestrator =
        Orchestrator::new(app.config.clone(), &wiring, invokers.as_ref()).map_err(|e| UsageError(e.to_string()))?;
    let scavenger = Scavenger::new(scavenger_config, &wiring);
    let mut intervals = app.config.daemon;
    if let Some(i) = interval {
        intervals.orchestrator_interval = i;
        intervals.scavenger_interval = i;
    }
    errln!(
        "sosw running: {} labourer(s), store {}, orchestrating every {} s and scavenging every {} s; Ctrl-C or SIGTERM \
         stops it (-v shows each pass)",
        app.config.labourers.len(),
        app.store_url,
        intervals.orchestrator_interval,
        intervals.scavenger_interval
    );
    if let Some((server, service)) = &served {
        errln!("sosw serving worker reports on {}/report", server.url);
        errln!(
            "sosw serving the API on {url}/api and Prometheus metrics on {url}/metrics{}",
            if service.auth.is_open() {
                " (no token configured: loopback only)"
            } else {
                ""
            },
            url = server.url
        );
    }
    let json = g.json;
    let (o, s) = sosw_engine::daemon::run(&orchestrator, &scavenger, app.clock.as_ref(), intervals, shutdown, |r, took| {
        if let Some(c) = &counters {
            c.observe_pass(&r, took);
        }
        match r {
        PassReport::Orchestrator(r) => {
            if json {
                report_line(&json!({"orchestrator": r.to_json()}));
            } else if r.total_invoked() > 0 || r.labourers.iter().any(|l| !l.errors.is_empty()) {
                for l in &r.labourers {
                    tracing::info!(labourer = %l.labourer_id, eco = l.eco_status, desired = l.desired, running = l.running, invoked = l.invoked, throttled = l.throttled, errors = ?l.errors, "orchestrated");
                }
            }
        }
        PassReport::Scavenger(r) => {
            if json {
                report_line(&json!({"scavenger": r.to_json()}));
            } else if r.moved_anything() {
                for l in &r.labourers {
                    tracing::info!(labourer = %l.labourer_id, archived = l.archived, retried = l.retried, requeued = l.requeued, dead = l.dead, "scavenged");
                }
            }
        }
    }})
    .await;
    crate::commands::reap(&supervisor, app.config.daemon.shutdown_grace).await;
    drop(served);
    errln!("sosw stopped after {o} orchestrator and {s} scavenger passes");
    Ok(())
}

/// Serves the API, metrics and reports on `addr`; refuses a non-loopback address without a token.
async fn serve(
    app: &App,
    wiring: &sosw_engine::Wiring,
    addr: std::net::SocketAddr,
) -> Result<(sosw_server::Server, std::sync::Arc<sosw_server::Service>)> {
    let section = app.config.server.clone().unwrap_or_default();
    let auth = sosw_server::Auth::new(section.tokens.clone(), |v| std::env::var(v).ok());
    sosw_server::check_exposure(addr, &auth).map_err(UsageError)?;
    let limits = sosw_server::Limits {
        max_body: section.max_body,
        ..sosw_server::Limits::DEFAULT
    };
    // The Scheduler's own keys (`job_schema`, …) for `POST /api/jobs`, as `sosw schedule` reads them; the report
    // tokens' secret shared by several daemons through SOSW_REPORT_SECRET, else drawn now.
    let scheduler_config = std::sync::Arc::new(load_config(&app.config_path, Essential::Scheduler).await?);
    let report_tokens = sosw_server::report_token::ReportTokens::from_env_or_random(|v| std::env::var(v).ok());
    let service = std::sync::Arc::new(
        sosw_server::Service::new(app.config.clone(), wiring.clone(), auth, limits)
            .with_scheduler_config(scheduler_config)
            .with_report_tokens(report_tokens),
    );
    let server = sosw_server::serve(addr, sosw_server::api::router(service.clone()), limits)
        .await
        .map_err(|e| UsageError(format!("cannot listen on {addr}: {e}")))?;
    // The dashboard's chart; it stops with the runtime when `sosw run` returns.
    tokio::spawn(sosw_server::sample_history(service.clone()));
    Ok((server, service))
}

/// Writes a pass report as a JSON line on stdout. A reader that went away (a closed pipe) does not stop the daemon:
/// the write error is logged once and the reports are dropped from then on.
fn report_line(line: &serde_json::Value) {
    static GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if GONE.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        GONE.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!("stdout is closed ({e}): pass reports are no longer written; the daemon keeps running");
    }
}
