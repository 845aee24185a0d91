//! Dead-task notifications in embedded mode: always the log, optionally a command (`notify.command`), which gets
//! the subject in `$SOSW_SUBJECT` and the messages on stdin, joined as SnsManager joins them.

use async_trait::async_trait;
use sosw_core::ports::{Notifier, NotifyError};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The separator SnsManager puts between queued messages.
pub const SEPARATOR: &str = "\n\n#####\n\n";

#[derive(Debug, Clone, Default)]
pub struct LocalNotifier {
    command: Option<Vec<String>>,
    cwd: Option<std::path::PathBuf>,
}

impl LocalNotifier {
    pub fn new(command: Option<Vec<String>>) -> LocalNotifier {
        LocalNotifier { command, cwd: None }
    }

    /// Runs the command in `dir` (the config's directory).
    #[must_use]
    pub fn in_dir(mut self, dir: std::path::PathBuf) -> LocalNotifier {
        self.cwd = Some(dir);
        self
    }
}

#[async_trait]
impl Notifier for LocalNotifier {
    async fn notify(&self, subject: &str, messages: &[String]) -> Result<(), NotifyError> {
        let Some(command) = &self.command else {
            tracing::warn!(subject, count = messages.len(), "{}", messages.join("; "));
            return Ok(());
        };
        tracing::info!(subject, count = messages.len(), "{}", messages.join("; "));
        let mut cmd = tokio::process::Command::new(&command[0]);
        cmd.args(&command[1..])
            .env("SOSW_SUBJECT", subject)
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| NotifyError(format!("cannot run `{}`: {e}", command.join(" "))))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(messages.join(SEPARATOR).as_bytes()).await;
        }
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .map_err(|_| NotifyError(format!("`{}` took longer than 30 s", command.join(" "))))?
            .map_err(|e| NotifyError(format!("`{}`: {e}", command.join(" "))))?;
        if status.success() {
            Ok(())
        } else {
            Err(NotifyError(format!("`{}` failed: {status}", command.join(" "))))
        }
    }
}
