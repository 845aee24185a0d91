//! sosw on AWS: the [`LambdaInvoker`], [`CloudWatchMetrics`], the [`SnsNotifier`], and the DynamoDB store: the same tables, keys, indexes and attribute types as Python
//! sosw (reference §2), so that Rust and Python essentials can share them, passing the same conformance suite as
//! the SQLite store.
//!
//! Every move between tables is one `TransactWriteItems` whose conditions make it atomic and conditional (archive:
//! Put closed + Delete live if still completed, or still at the greenfield read; retry: Put retry + Delete live if
//! not completed and still at the greenfield read), and a claim is Python sosw's conditional update, stricter only
//! in also requiring the greenfield as read. Reads of live tasks go through the `sosw_tasks_greenfield` index.
//!
//! Costs worth knowing: finding a task in the retry table by its id alone (the table is keyed by labourer, then
//! task), which `get`, `complete` and `fail` do only after the live table missed, reads the labourer from the task's
//! audit trail (one Query, one GetItem) and scans the retry table only for a task with no trail; listing every
//! labourer scans the three tables. Moves' audit events are written by group commit (`MetaQueue`).

pub mod cloudwatch;
pub mod config_source;
mod item;
pub mod lambda;
pub mod s3;
mod sdk;
pub mod sns;
mod tables;

pub use cloudwatch::CloudWatchMetrics;
pub use config_source::{ConfigSource, ConfigSourceError};
pub use lambda::{AwsInvokers, LambdaInvoker};
pub use sdk::{is_throttling, retry_config, Aws, MAX_ATTEMPTS};
pub use sns::SnsNotifier;
pub use tables::Tables;

/// Re-exported for the binary, so that it does not name the AWS SDK crates itself.
pub use aws_config::SdkConfig;
pub use aws_sdk_dynamodb::Client as DynamoDbClient;
pub use aws_sdk_ssm::Client as SsmClient;

mod dynamo;

pub use dynamo::DynamoStore;
pub(crate) use dynamo::{existing_tables, sdk_err};
