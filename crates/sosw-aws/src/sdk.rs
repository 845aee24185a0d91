//! One AWS configuration for every client sosw makes, with its retry policy stated here and nowhere else.
//!
//! - **DynamoDB, SSM, SNS, S3, CloudWatch**: the SDK's *standard* retry mode, [`MAX_ATTEMPTS`] attempts with
//!   exponential backoff and jitter. This is the one layer that retries throttling (`ThrottlingException`,
//!   `ProvisionedThroughputExceededException`, `RequestLimitExceeded`) and transient errors. sosw's own code never
//!   retries a failed request; it only re-sends the *unprocessed part* of a successful batch request, which is not
//!   an error to the SDK.
//! - **Lambda** (the orchestrator's invocations): **no retries**. An `Invoke` retried after a timeout may start the
//!   worker twice; the orchestrator decides instead (throttled → the task stays queued, attempt refunded).
//!
//! Every throttled DynamoDB response is counted ([`Aws::throttled`]), so that the essentials' pass reports show
//! throttling that the retries hid.
//!
//! **Endpoints** follow the SDK's standard configuration: `AWS_ENDPOINT_URL` for every service,
//! `AWS_ENDPOINT_URL_<SERVICE>` (`_DYNAMODB`, `_LAMBDA`, `_SNS`, `_S3`, `_SSM`, `_CLOUDWATCH`) for one, or the
//! profile's `endpoint_url` / `services` sections. A store URL `dynamodb:URL` ([`Aws::for_store`]) sets DynamoDB's
//! endpoint only; [`Aws::local`] sends every service to one endpoint (tests, a single local emulator).

use aws_config::retry::RetryConfig;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Attempts per request (the first one included) for every client but Lambda's.
pub const MAX_ATTEMPTS: u32 = 5;

/// Error codes that mean "slow down", as DynamoDB sends them.
pub(crate) const THROTTLING_CODES: [&str; 4] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
];

/// The AWS clients of one process, built from one configuration.
#[derive(Debug, Clone)]
pub struct Aws {
    sdk: SdkConfig,
    /// DynamoDB's own endpoint (a store URL's), over whatever the environment configures.
    dynamodb_endpoint: Option<String>,
    throttled: Arc<AtomicU64>,
}

impl Aws {
    /// AWS as the environment configures it (region, credentials, `AWS_ENDPOINT_URL`): what a Lambda function uses.
    pub async fn from_env() -> Aws {
        Aws::with_loader(aws_config::defaults(aws_config::BehaviorVersion::latest())).await
    }

    /// Every service at one local AWS-compatible endpoint (`http://127.0.0.1:5000`), with dummy credentials, in
    /// `AWS_REGION` or `us-east-1`.
    pub async fn local(endpoint: &str) -> Aws {
        Aws::with_loader(local_loader().endpoint_url(endpoint)).await
    }

    /// AWS for a store URL `dynamodb:[URL]`: with a URL, DynamoDB at that endpoint and every other service where
    /// the SDK's standard configuration says (`AWS_ENDPOINT_URL_LAMBDA`, …; see the module documentation). A
    /// loopback URL (a local emulator) with no credentials named in the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_PROFILE`) gets dummy credentials and `AWS_REGION` or `us-east-1`, as [`Aws::local`]; any other URL (a
    /// VPC endpoint, say), or named credentials, keeps the environment's whole configuration — credential chain,
    /// profile, region. Without a URL, [`Aws::from_env`].
    pub async fn for_store(dynamodb_endpoint: Option<&str>) -> Aws {
        let Some(endpoint) = dynamodb_endpoint else {
            return Aws::from_env().await;
        };
        let named = |v: &str| std::env::var_os(v).is_some_and(|s| !s.is_empty());
        let mut aws =
            if sosw_core::config::is_loopback_host(endpoint) && !named("AWS_ACCESS_KEY_ID") && !named("AWS_PROFILE") {
                Aws::with_loader(local_loader()).await
            } else {
                Aws::from_env().await
            };
        aws.dynamodb_endpoint = Some(endpoint.to_string());
        aws
    }

    async fn with_loader(loader: aws_config::ConfigLoader) -> Aws {
        let sdk = loader.retry_config(retry_config()).load().await;
        Aws {
            sdk,
            dynamodb_endpoint: None,
            throttled: Arc::default(),
        }
    }

    pub fn sdk(&self) -> &SdkConfig {
        &self.sdk
    }

    /// The region the clients talk to (`AWS_REGION`, the profile, or `us-east-1` for a local endpoint).
    pub fn region(&self) -> Option<String> {
        self.sdk.region().map(ToString::to_string)
    }

    /// DynamoDB responses throttled so far, on every DynamoDB client made here (each was retried by the SDK, or,
    /// after [`MAX_ATTEMPTS`], failed as [`sosw_core::ports::StoreError::Throttled`]).
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    pub(crate) fn throttle_counter(&self) -> Arc<AtomicU64> {
        self.throttled.clone()
    }

    /// A DynamoDB client that counts throttled responses.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let mut conf =
            aws_sdk_dynamodb::config::Builder::from(&self.sdk).interceptor(CountThrottles(self.throttled.clone()));
        if let Some(endpoint) = &self.dynamodb_endpoint {
            conf = conf.endpoint_url(endpoint);
        }
        let conf = conf.build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    }

    /// A Lambda client that never retries (see the module documentation).
    pub fn lambda(&self) -> aws_sdk_lambda::Client {
        let conf = aws_sdk_lambda::config::Builder::from(&self.sdk)
            .retry_config(RetryConfig::disabled())
            .build();
        aws_sdk_lambda::Client::from_conf(conf)
    }

    pub fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.sdk)
    }

    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk)
    }

    pub fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        aws_sdk_cloudwatch::Client::new(&self.sdk)
    }

    /// An S3 client; path-style addressing on a configured endpoint (a local one has no bucket subdomains).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let local = self.sdk.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(local)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// The region of a local endpoint: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1` (never the instance
/// metadata service).
fn default_region() -> aws_config::Region {
    let env = |v: &str| std::env::var(v).ok().filter(|r| !r.is_empty());
    aws_config::Region::new(
        env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into()),
    )
}

/// A loader for local endpoints: [`default_region`] and dummy credentials.
fn local_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(default_region())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "sosw",
        ))
}

/// The retry policy of every client but Lambda's.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(50))
        .with_max_backoff(Duration::from_secs(5))
}

/// Whether an HTTP response is DynamoDB asking the client to slow down.
pub fn is_throttling(status: u16, error_type_header: Option<&str>, body: &[u8]) -> bool {
    if status == 429 {
        return true;
    }
    if !(400..500).contains(&status) {
        return false;
    }
    let named = |text: &str| THROTTLING_CODES.iter().any(|c| text.contains(c));
    error_type_header.is_some_and(named) || std::str::from_utf8(body).is_ok_and(named)
}

#[derive(Debug)]
struct CountThrottles(Arc<AtomicU64>);

impl Intercept for CountThrottles {
    fn name(&self) -> &'static str {
        "SoswCountThrottles"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(response) = context.response() {
            let header = response.headers().get("x-amzn-errortype");
            let body = response.body().bytes().unwrap_or_default();
            if is_throttling(response.status().as_u16(), header, body) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_recognised_by_status_header_or_body() {
        let body =
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"x"}"#;
        assert!(is_throttling(400, None, body));
        assert!(is_throttling(400, Some("ThrottlingException:http://internal"), b""));
        assert!(is_throttling(429, None, b""));
        assert!(!is_throttling(
            400,
            None,
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"}"#
        ));
        assert!(!is_throttling(200, None, b"ThrottlingException in an item"));
        assert!(!is_throttling(500, None, b"ThrottlingException"));
    }
}
