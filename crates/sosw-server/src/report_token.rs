//! Per-invocation report tokens: HMAC-SHA256 of the task id and its invocation's number ([`Invocation::number`]:
//! attempts plus refunded attempts, which never repeats, even when an invocation is given back unsent) with the
//! server's secret. A worker gets the token of the one invocation it was sent
//! ([`sosw_core::ports::REPORT_TOKEN_VAR`], [`sosw_core::ports::REPORT_TOKEN_HEADER`]); the server accepts a report
//! with it only for that task while that invocation is its latest, and the store's write checks the invocation
//! again, so a re-invocation between the check and the write refuses the report too. A heartbeat does not change
//! it (it moves the greenfield, not the invocation).
//!
//! The number is signed as 4 bytes (the format of the first report tokens): a task invoked more than 2³² − 1 times
//! gets the same token for every invocation after that.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sosw_core::ports::ReportSigner;
use sosw_core::Invocation;

/// The environment variable that gives several `sosw run` servers one secret (workers may then report to any of
/// them); without it each server draws its own at start.
pub const SECRET_VAR: &str = "SOSW_REPORT_SECRET";

/// Signs and checks report tokens with one secret.
#[derive(Clone)]
pub struct ReportTokens {
    secret: Vec<u8>,
}

impl std::fmt::Debug for ReportTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReportTokens { secret: <hidden> }")
    }
}

impl ReportTokens {
    pub fn new(secret: impl Into<Vec<u8>>) -> ReportTokens {
        ReportTokens { secret: secret.into() }
    }

    /// The secret from [`SECRET_VAR`] (given by `var`) if set, else a random one (244 bits).
    pub fn from_env_or_random(var: impl Fn(&str) -> Option<String>) -> ReportTokens {
        match var(SECRET_VAR).filter(|s| !s.trim().is_empty()) {
            Some(s) => ReportTokens::new(s.trim().as_bytes()),
            None => ReportTokens::new(crate::auth::new_token().into_bytes()),
        }
    }

    fn mac(&self, task_id: &str, invocation: Invocation) -> Hmac<Sha256> {
        // Any key length is valid for HMAC: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        mac.update(task_id.as_bytes());
        mac.update(b"\0");
        let number = u32::try_from(invocation.number()).unwrap_or(u32::MAX);
        mac.update(&number.to_be_bytes());
        mac
    }

    /// Whether `token` is the token of `task_id`'s `invocation` (compared in constant time).
    pub fn verify(&self, task_id: &str, invocation: Invocation, token: &str) -> bool {
        let Some(bytes) = decode_hex(token.trim()) else {
            return false;
        };
        self.mac(task_id, invocation).verify_slice(&bytes).is_ok()
    }
}

impl ReportSigner for ReportTokens {
    fn sign(&self, task_id: &str, invocation: Invocation) -> String {
        let digest = self.mac(task_id, invocation).finalize().into_bytes();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(attempts: u32, refunded: u32) -> Invocation {
        Invocation { attempts, refunded }
    }

    #[test]
    fn a_token_is_good_for_one_task_one_invocation_and_one_secret() {
        let t = ReportTokens::new("s3cr3t-value");
        let token = t.sign("task-1", inv(2, 0));
        assert_eq!(token.len(), 64);
        assert!(t.verify("task-1", inv(2, 0), &token));
        assert!(
            t.verify("task-1", inv(2, 0), &token.to_uppercase()),
            "hex in either case"
        );
        assert!(!t.verify("task-1", inv(3, 0), &token), "a later invocation");
        assert!(!t.verify("task-1", inv(1, 0), &token), "an earlier one");
        assert!(!t.verify("task-1", inv(2, 1), &token), "the next one after a refund");
        assert!(t.verify("task-1", inv(1, 1), &token), "the number is what is signed");
        assert!(!t.verify("task-2", inv(2, 0), &token), "another task");
        assert!(
            !ReportTokens::new("other").verify("task-1", inv(2, 0), &token),
            "another server's secret"
        );
        for forged in ["", "zz", &"0".repeat(64), &"é".repeat(32), &token[..63]] {
            assert!(!t.verify("task-1", inv(2, 0), forged), "{forged:?}");
        }
        // The id and the number cannot be traded against each other ("a" + 1 ≠ "a\0…" + …).
        assert_ne!(t.sign("a", inv(1, 0)), t.sign("a\0\0\0\0", inv(1, 0)));
        // The format of the first report tokens (4 bytes of the number), so that tokens given out before the
        // refund count existed are still good; absurd counts saturate instead of overflowing.
        assert_eq!(
            t.sign("task-1", inv(u32::MAX, u32::MAX)),
            t.sign("task-1", inv(u32::MAX, 0))
        );
        assert!(
            !format!("{t:?}").contains("s3cr3t-value"),
            "the secret is never printed"
        );
    }

    #[test]
    fn the_secret_comes_from_the_environment_or_is_drawn() {
        let shared = |v: &str| (v == SECRET_VAR).then(|| "shared".to_string());
        let (a, b) = (
            ReportTokens::from_env_or_random(shared),
            ReportTokens::from_env_or_random(shared),
        );
        assert_eq!(
            a.sign("t", inv(1, 0)),
            b.sign("t", inv(1, 0)),
            "two servers with one secret agree"
        );
        let (c, d) = (
            ReportTokens::from_env_or_random(|_| None),
            ReportTokens::from_env_or_random(|_| None),
        );
        assert_ne!(c.sign("t", inv(1, 0)), d.sign("t", inv(1, 0)));
    }
}
