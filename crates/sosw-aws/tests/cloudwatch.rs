//! CloudWatch health metrics against a local moto_server (`SOSW_TEST_DYNAMODB` is its endpoint), with the seed
//! config's `details` shape.

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use serde_json::json;
use sosw_aws::CloudWatchMetrics;
use sosw_core::config::Config;
use sosw_core::ports::MetricSource;
use sosw_core::{Clock, SystemClock};
use sosw_testkit::fakes::FakeMetrics;

#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn reads_the_seed_shape_and_treats_no_data_as_unreadable() {
    let Some(endpoint) = sosw_testkit::service("SOSW_TEST_DYNAMODB") else {
        return;
    };
    let client = sosw_aws::Aws::local(&endpoint).await.cloudwatch();
    // The clock of a real server: the datapoints carry wall-clock timestamps.
    let now = SystemClock.now();
    let db = format!("db-{}", std::process::id());
    for value in [10.0, 20.0] {
        let datum = MetricDatum::builder()
            .metric_name("CPUUtilization")
            .dimensions(Dimension::builder().name("DBInstanceIdentifier").value(&db).build())
            .value(value)
            .timestamp(DateTime::from_secs(now.secs() - 30))
            .build();
        client
            .put_metric_data()
            .namespace("AWS/RDS")
            .metric_data(datum)
            .send()
            .await
            .expect("put");
    }
    let metric = |instance: &str, statistic: &str| {
        let config = Config::from_value(
            &json!({"task_config": {"labourers": {"w": {"arn": "x", "health_metrics": {"cpu": {
            "details": {"Name": "CPUUtilization", "Namespace": "AWS/RDS", "Period": 60, "Statistics": [statistic],
                        "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": instance}]},
            "feelings": {"3": 50, "4": 25}, "feeling_comparison_operator": "<="}}}}}}),
        )
        .expect("config");
        config.labourers[0].health_metrics[0].details.clone()
    };
    let source = CloudWatchMetrics::new(client, FakeMetrics::new());
    assert_eq!(source.fetch(&metric(&db, "Average"), now).await, Ok(15.0));
    assert_eq!(source.fetch(&metric(&db, "Maximum"), now).await, Ok(20.0));
    let none = source
        .fetch(&metric("no-such-db", "Average"), now)
        .await
        .expect_err("no datapoints");
    assert!(none.0.contains("no datapoints"), "{}", none.0);
}
