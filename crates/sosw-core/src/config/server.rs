//! `server`: what `sosw run` serves over HTTP — the API, `/metrics`, worker reports — and who may use it.

use super::reader::{join, show, Reader};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::SocketAddr;

/// `sosw run`'s address when the `server` section gives none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// The largest request body the server takes by default (`server.max_body`): 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// The most `server.max_body` may be: 64 MiB.
const MAX_MAX_BODY: i64 = 64 * 1024 * 1024;

/// What a token may do. Each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every `GET`: labourers, tasks, jobs, metrics.
    Read,
    /// Create tasks, submit jobs, pause / resume / limit labourers, re-queue dead tasks.
    Write,
    /// Everything.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// A bearer token the server accepts: only its SHA-256 is in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenConfig {
    /// Who holds it, for the log (never the token).
    pub name: String,
    pub scope: Scope,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

/// The `server` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// `listen`: the address `sosw run` serves on (default [`DEFAULT_LISTEN`]; `--listen` overrides it).
    pub listen: SocketAddr,
    pub tokens: Vec<TokenConfig>,
    /// `max_body`: the largest request body, in bytes (413 beyond).
    pub max_body: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8787))),
            tokens: Vec::new(),
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// The SHA-256 of a token, as the config holds it.
/// Whether a host (`127.0.0.1:8787`, `localhost`, `[::1]:8787`, or a URL's `http://localhost:8000/x`) names this
/// machine: what an open server answers to, and which store endpoints are local emulators.
pub fn is_loopback_host(host: &str) -> bool {
    let rest = host.split_once("://").map_or(host, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let name = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub fn token_sha256(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// `None` when the config has no `server` section.
pub(super) fn read_server(r: &mut Reader, top: &Map<String, Value>) -> Option<ServerConfig> {
    let obj = r.object(top, "server", "")?;
    let path = "server";
    r.unknown_keys(obj, path, &["listen", "tokens", "max_body"], |_| false);
    let d = ServerConfig::default();
    let listen = match r.string(obj, "listen", path) {
        None => d.listen,
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                r.error(
                    join(path, "listen"),
                    format!("expected an address such as \"127.0.0.1:8787\" or \"[::1]:8787\", got \"{s}\""),
                );
                d.listen
            }
        },
    };
    let max_body = r
        .int_in(obj, "max_body", path, 1024, MAX_MAX_BODY)
        .map_or(d.max_body, |n| n as usize);
    let mut tokens: Vec<TokenConfig> = Vec::new();
    match obj.get("tokens") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let tpath = format!("{path}.tokens[{i}]");
                if let Some(t) = read_token(r, item, &tpath) {
                    if tokens.iter().any(|o| o.name == t.name) {
                        r.error(
                            join(&tpath, "name"),
                            format!("`{}` is the name of another token", t.name),
                        );
                    } else if tokens.iter().any(|o| o.sha256 == t.sha256) {
                        r.error(
                            join(&tpath, "sha256"),
                            "is the hash of another token: give each holder its own",
                        );
                    } else {
                        tokens.push(t);
                    }
                }
            }
        }
        Some(other) => r.error(
            join(path, "tokens"),
            format!(
                "expected a list of {{\"name\", \"scope\", \"sha256\"}} objects, got {}",
                show(other)
            ),
        ),
    }
    Some(ServerConfig {
        listen,
        tokens,
        max_body,
    })
}

fn read_token(r: &mut Reader, item: &Value, path: &str) -> Option<TokenConfig> {
    let Value::Object(obj) = item else {
        r.error(
            path,
            format!(
                "expected an object {{\"name\", \"scope\", \"sha256\"}}, got {}",
                show(item)
            ),
        );
        return None;
    };
    r.unknown_keys(obj, path, &["name", "scope", "sha256"], |_| false);
    let name = r.string(obj, "name", path);
    let scope = r.string(obj, "scope", path);
    let hash = r.string(obj, "sha256", path);
    let scope = match scope.as_deref().map(|s| (s, Scope::parse(s))) {
        Some((_, Some(scope))) => Some(scope),
        Some((s, None)) => {
            r.error(
                join(path, "scope"),
                format!("expected \"read\", \"write\" or \"admin\", got \"{s}\""),
            );
            None
        }
        None => {
            r.error(join(path, "scope"), "is required: \"read\", \"write\" or \"admin\"");
            None
        }
    };
    let sha256 = match hash.as_deref() {
        Some(h) => match parse_hex32(&h.to_ascii_lowercase()) {
            Some(bytes) => Some(bytes),
            None => {
                r.error(
                    join(path, "sha256"),
                    "expected the token's SHA-256 as 64 hex digits (`sosw token new` prints one; \
                     `printf %s TOKEN | sha256sum` computes it); never the token itself",
                );
                None
            }
        },
        None => {
            r.error(
                join(path, "sha256"),
                "is required: the token's SHA-256 as 64 hex digits",
            );
            None
        }
    };
    if name.is_none() {
        r.error(
            join(path, "name"),
            "is required: who holds the token (shown in the log)",
        );
    }
    Some(TokenConfig {
        name: name?,
        scope: scope?,
        sha256: sha256?,
    })
}
