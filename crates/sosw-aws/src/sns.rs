//! Dead-task notifications to an SNS topic (`sns_config.recipient`), as SnsManager commits them: one message per
//! pass, the messages joined by `\n\n#####\n\n`. The region comes from the environment (Python sosw hard-coded
//! us-west-2); a message over SNS's size limit is split.

use async_trait::async_trait;
use sosw_core::ports::{Notifier, NotifyError};

/// How SnsManager separates the messages of one notification.
pub const SEPARATOR: &str = "\n\n#####\n\n";
/// SNS accepts up to 256 KiB per message; keep a margin for the envelope.
const MAX_MESSAGE: usize = 250 * 1024;

#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> SnsNotifier {
        SnsNotifier {
            client,
            topic_arn: topic_arn.into(),
        }
    }

    pub fn from_aws(aws: &crate::Aws, topic_arn: impl Into<String>) -> SnsNotifier {
        SnsNotifier::new(aws.sns(), topic_arn)
    }
}

/// The messages joined by [`SEPARATOR`], in as few bodies under `limit` bytes as they fit in.
pub fn bodies(messages: &[String], limit: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in messages {
        match out.last_mut() {
            Some(body) if body.len() + SEPARATOR.len() + m.len() <= limit => {
                body.push_str(SEPARATOR);
                body.push_str(m);
            }
            _ => out.push(m.chars().take(limit).collect()),
        }
    }
    out
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn notify(&self, subject: &str, messages: &[String]) -> Result<(), NotifyError> {
        tracing::info!(topic = %self.topic_arn, subject, count = messages.len(), "{}", messages.join("; "));
        // SNS subjects are at most 100 characters.
        let subject: String = subject.chars().take(100).collect();
        for body in bodies(messages, MAX_MESSAGE) {
            self.client
                .publish()
                .topic_arn(&self.topic_arn)
                .subject(&subject)
                .message(body)
                .send()
                .await
                .map_err(|e| {
                    NotifyError(format!(
                        "publishing to `{}`: {}",
                        self.topic_arn,
                        aws_sdk_sns::error::DisplayErrorContext(&e)
                    ))
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_joined_and_split_under_the_limit() {
        let m = |i: usize| format!("Closing dead task: {i:032} ");
        let all: Vec<String> = (0..10).map(m).collect();
        let one = bodies(&all, 10_000);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].matches(SEPARATOR).count(), 9);
        let several = bodies(&all, 200);
        assert!(several.len() > 1 && several.iter().all(|b| b.len() <= 200));
        assert_eq!(
            several
                .iter()
                .map(|b| b.matches("Closing dead task").count())
                .sum::<usize>(),
            10
        );
        assert!(bodies(&[], 10).is_empty());
    }
}
