//! Who may do what: bearer tokens, each with a [`Scope`]; the config holds only their SHA-256.
//!
//! With no token configured the server is open, and then it only listens on a loopback address
//! ([`check_exposure`]). A token is never logged: the log names its holder (`name`).

use crate::error::ApiError;
use axum::http::{header, HeaderMap, StatusCode};
use sosw_core::config::{token_sha256, Scope, TokenConfig};
use std::net::SocketAddr;
use std::sync::Arc;

/// The environment variables that give a token of each scope (the plain token; for a quick start or a secret
/// store that fills the environment).
/// (The names are among [`sosw_core::ports::SECRET_ENV_VARS`]: a worker process never inherits them.)
pub const TOKEN_VARS: [(&str, Scope); 3] = [
    ("SOSW_READ_TOKEN", Scope::Read),
    ("SOSW_WRITE_TOKEN", Scope::Write),
    ("SOSW_ADMIN_TOKEN", Scope::Admin),
];

/// The tokens a server accepts.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Arc<Vec<TokenConfig>>,
}

/// Who made a request: a token's holder, or `anonymous` on an open server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
}

impl Auth {
    /// The config's tokens, and one per environment variable of [`TOKEN_VARS`] that `var` gives.
    pub fn new(mut tokens: Vec<TokenConfig>, var: impl Fn(&str) -> Option<String>) -> Auth {
        for (name, scope) in TOKEN_VARS {
            if let Some(token) = var(name).filter(|t| !t.trim().is_empty()) {
                tokens.push(TokenConfig {
                    name: format!("${name}"),
                    scope,
                    sha256: token_sha256(token.trim()),
                });
            }
        }
        Auth {
            tokens: Arc::new(tokens),
        }
    }

    /// No token configured: every request is allowed (on loopback only).
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller, if its `Authorization: Bearer` token has at least `need`. 401 without a known token, 403 with
    /// one whose scope is too small.
    pub fn require(&self, headers: &HeaderMap, need: Scope) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller {
                name: "anonymous".into(),
                scope: Scope::Admin,
            });
        }
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized("this server needs `Authorization: Bearer <token>`"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the `Authorization` header must be `Bearer <token>`"))?;
        // Comparing digests: equal time for every token of one length, and the digest gives nothing away.
        let digest = token_sha256(token);
        let Some(t) = self.tokens.iter().find(|t| t.sha256 == digest) else {
            return Err(unauthorized("the token is not one this server accepts"));
        };
        if t.scope < need {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "the token of `{}` has scope `{}`; this needs `{}`",
                    t.name,
                    t.scope.as_str(),
                    need.as_str()
                ),
            ));
        }
        Ok(Caller {
            name: t.name.clone(),
            scope: t.scope,
        })
    }
}

/// Refuses to serve on an address other machines can reach without any token: anyone there could steer dispatch.
pub fn check_exposure(addr: SocketAddr, auth: &Auth) -> Result<(), String> {
    if auth.is_open() && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to serve on {addr} without a token: anyone who can reach it could create tasks and pause \
             labourers. Add `server.tokens` (`sosw token new --scope admin` prints one) or set {}, or listen on \
             127.0.0.1",
            TOKEN_VARS.map(|(v, _)| v).join(" / ")
        ));
    }
    Ok(())
}

/// A new random token: 244 bits from the system's generator (two v4 UUIDs), as 64 hex digits.
pub fn new_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// A digest as the config spells it: 64 lowercase hex digits.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
