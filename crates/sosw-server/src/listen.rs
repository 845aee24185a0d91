//! Serving connections with limits a client cannot starve: a connection that does not send a request's headers in
//! time — a new one, or a kept-alive one gone idle — is closed; a body must arrive in time and be small
//! ([`crate::read_body`]); and at most `max_connections` are served at once, the rest waiting in the kernel's listen
//! backlog, so the daemon's file descriptors (which its workers need) are never exhausted by HTTP clients.

use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What one client may take of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers, counted from the connection's start or, on a kept-alive connection, from
    /// the end of the previous response — so it is the idle timeout too.
    pub header_read: Duration,
    /// Time to send a request's body once its headers are in.
    pub body_read: Duration,
    /// Connections served at once; further ones wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Largest request body, in bytes (`server.max_body`).
    pub max_body: usize,
}

impl Limits {
    /// 10 s for headers (and idle), 30 s for a body, 256 connections, 1 MiB bodies.
    pub const DEFAULT: Limits = Limits {
        header_read: Duration::from_secs(10),
        body_read: Duration::from_secs(30),
        max_connections: 256,
        max_body: sosw_core::config::DEFAULT_MAX_BODY,
    };
}

/// A running server; dropping it stops it and every connection it serves.
#[derive(Debug)]
pub struct Server {
    /// `http://ADDR`, with the port the system chose for `:0`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
    /// Connections being served; each holds a clone.
    served: Arc<()>,
}

impl Server {
    /// Connections being served now (at most `max_connections`).
    pub fn connections(&self) -> usize {
        Arc::strong_count(&self.served) - 1
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `app` with `limits` until the returned server is dropped.
pub async fn serve(addr: SocketAddr, app: Router, limits: Limits) -> std::io::Result<Server> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let served = Arc::new(());
    let task = tokio::spawn(accept_loop(listener, app, Arc::downgrade(&served), limits));
    Ok(Server {
        url: format!("http://{local}"),
        task,
        served,
    })
}

/// Accepts a connection only when a slot is free, and serves each with hyper's header-read timeout. Connections
/// live in a `JoinSet` owned here, so stopping the server stops them too.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, served: std::sync::Weak<()>, limits: Limits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors or memory: say so and let closing connections make room, without spinning.
                tracing::warn!("the server cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let Some(serving) = served.upgrade() else {
            return;
        };
        connections.spawn(async move {
            let _slot = (slot, serving);
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("a connection ended: {e}");
            }
        });
    }
}
