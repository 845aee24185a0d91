//! Labourers as AWS Lambda functions (`arn`), invoked asynchronously (`InvocationType=Event`) with the flat worker
//! event, as Python sosw's Orchestrator does.

use async_trait::async_trait;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use sosw_core::classify::{lambda_error_code, lambda_transport, LambdaTransport};
use sosw_core::decide::FailureKind;
use sosw_core::ports::{InvokeError, InvokeOutcome, Invoker};
use sosw_core::Task;

/// Lambda's limit on an asynchronous invocation's payload.
pub const MAX_ASYNC_PAYLOAD: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaInvoker {
    /// `function` is the labourer's `arn` (a name, an ARN, or an ARN with a version or alias).
    pub fn new(client: aws_sdk_lambda::Client, function: impl Into<String>) -> LambdaInvoker {
        LambdaInvoker {
            client,
            function: function.into(),
        }
    }
}

/// How a failed `Invoke` affects the task, by `sosw_core::classify`'s tables: throttling is not the task's fault;
/// a missing function, a missing permission, an endpoint that is not Lambda's or no connection at all are the
/// labourer's (its tasks wait, no attempt spent); a rejected request never succeeds; anything after sending may
/// have arrived.
fn classify<E>(function: &str, e: SdkError<E, aws_sdk_lambda::config::http::HttpResponse>) -> InvokeError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = format!(
        "invoking `{function}`: {}",
        aws_sdk_lambda::error::DisplayErrorContext(&e)
    );
    let kind = match e.code() {
        Some(code) => lambda_error_code(code),
        None => lambda_transport(match &e {
            SdkError::ConstructionFailure(_) => LambdaTransport::Construction,
            SdkError::DispatchFailure(d) if !d.is_timeout() && never_connected(&e) => LambdaTransport::Connect,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => LambdaTransport::AfterSending,
            SdkError::ServiceError(s) => LambdaTransport::Status(s.raw().status().as_u16()),
            // An answer that does not parse as Lambda's.
            _ => LambdaTransport::UnreadableResponse,
        }),
    };
    InvokeError {
        kind,
        message,
        retry_after: None,
    }
}

/// Whether a dispatch failure happened before a connection existed (refused, DNS), so that the request certainly
/// did not arrive; an I/O error after connecting may have delivered it.
fn never_connected(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("connect") || text.contains("dns") {
            return true;
        }
        source = err.source();
    }
    false
}

#[async_trait]
impl Invoker for LambdaInvoker {
    async fn invoke(&self, _task: &Task, event: &str) -> Result<InvokeOutcome, InvokeError> {
        self.send_event(event).await
    }
}

impl LambdaInvoker {
    /// Invokes the function asynchronously with `event` (checked against Lambda's size limit before sending).
    pub async fn send_event(&self, event: &str) -> Result<InvokeOutcome, InvokeError> {
        if event.len() > MAX_ASYNC_PAYLOAD {
            return Err(InvokeError::new(
                FailureKind::Permanent,
                format!(
                    "the event is {} bytes, over Lambda's {} KiB limit for asynchronous invocations; it was not sent",
                    event.len(),
                    MAX_ASYNC_PAYLOAD / 1024
                ),
            ));
        }
        let out = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(event.as_bytes()))
            .send()
            .await;
        match out {
            Ok(o) if (200..300).contains(&o.status_code()) => Ok(InvokeOutcome::Accepted),
            Ok(o) => Err(InvokeError::new(
                // An asynchronous invocation is accepted with 202: any other answer is not Lambda's.
                lambda_transport(LambdaTransport::UnreadableResponse),
                format!(
                    "invoking `{}`: status {} (an asynchronous invocation answers 202)",
                    self.function,
                    o.status_code()
                ),
            )),
            // A throttle holds the labourer for `circuit_breaker.throttle_hold`: Lambda gives no Retry-After.
            Err(e) => Err(classify(&self.function, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_follow_the_core_table() {
        for (code, kind) in [
            ("TooManyRequestsException", FailureKind::Throttled),
            ("ResourceNotFoundException", FailureKind::Labourer),
            ("AccessDeniedException", FailureKind::Labourer),
            ("RequestTooLargeException", FailureKind::Permanent),
            ("ServiceException", FailureKind::Transient),
        ] {
            assert_eq!(lambda_error_code(code), kind, "{code}");
        }
    }
}

/// Invokers for the AWS build: labourers with an `arn` through [`LambdaInvoker`], every other one through
/// `fallback` (the local process and HTTP invokers).
#[derive(Debug)]
pub struct AwsInvokers {
    lambda: aws_sdk_lambda::Client,
    fallback: Box<dyn sosw_core::ports::InvokerFactory>,
}

impl AwsInvokers {
    pub fn new(lambda: aws_sdk_lambda::Client, fallback: Box<dyn sosw_core::ports::InvokerFactory>) -> AwsInvokers {
        AwsInvokers { lambda, fallback }
    }

    /// With `aws`'s Lambda client (which never retries an invocation).
    pub fn from_aws(aws: &crate::Aws, fallback: Box<dyn sosw_core::ports::InvokerFactory>) -> AwsInvokers {
        AwsInvokers::new(aws.lambda(), fallback)
    }
}

impl sosw_core::ports::InvokerFactory for AwsInvokers {
    fn invoker_for(&self, labourer: &sosw_core::Labourer) -> Result<std::sync::Arc<dyn Invoker>, String> {
        match &labourer.invoker {
            sosw_core::config::InvokerSpec::Lambda { arn } => Ok(std::sync::Arc::new(LambdaInvoker::new(
                self.lambda.clone(),
                arn.clone(),
            ))),
            _ => self.fallback.invoker_for(labourer),
        }
    }
}
