//! Health metrics from CloudWatch, in Python sosw's `details` shape (`Namespace`, `MetricName` or `Name`,
//! `Dimensions`, `Period`, `Statistics`, `MetricAggregationTimeSlice`): `GetMetricStatistics` over the window
//! `[now − slice, now]`, its datapoints aggregated by the statistic.

use async_trait::async_trait;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Datapoint, Dimension, Statistic};
use sosw_core::config::{CloudWatchMetric, MetricDetails};
use sosw_core::ports::{MetricError, MetricSource};
use sosw_core::Time;
use std::sync::Arc;

/// CloudWatch metrics, and every other kind through `fallback` (the local sources).
#[derive(Debug, Clone)]
pub struct CloudWatchMetrics {
    client: aws_sdk_cloudwatch::Client,
    fallback: Arc<dyn MetricSource>,
}

impl CloudWatchMetrics {
    pub fn new(client: aws_sdk_cloudwatch::Client, fallback: Arc<dyn MetricSource>) -> CloudWatchMetrics {
        CloudWatchMetrics { client, fallback }
    }

    pub fn from_aws(aws: &crate::Aws, fallback: Arc<dyn MetricSource>) -> CloudWatchMetrics {
        CloudWatchMetrics::new(aws.cloudwatch(), fallback)
    }

    async fn fetch_cloudwatch(&self, m: &CloudWatchMetric, now: Time) -> Result<f64, MetricError> {
        let name = format!("{}/{}", m.namespace, m.metric_name);
        let statistic = Statistic::from(m.statistic.as_str());
        let mut req = self
            .client
            .get_metric_statistics()
            .namespace(&m.namespace)
            .metric_name(&m.metric_name)
            .start_time(DateTime::from_secs(now.secs() - m.time_slice))
            .end_time(DateTime::from_secs(now.secs()))
            .period(i32::try_from(m.period).unwrap_or(i32::MAX))
            .statistics(statistic.clone());
        for (k, v) in &m.dimensions {
            req = req.dimensions(Dimension::builder().name(k).value(v).build());
        }
        let out = req.send().await.map_err(|e| {
            MetricError(format!(
                "CloudWatch `{name}`: {}",
                aws_sdk_cloudwatch::error::DisplayErrorContext(&e)
            ))
        })?;
        aggregate(&statistic, out.datapoints()).ok_or_else(|| {
            MetricError(format!(
                "CloudWatch `{name}` has no datapoints in the last {} s",
                m.time_slice
            ))
        })
    }
}

/// Average: the mean of the averages; Maximum / Minimum: the extreme; Sum / SampleCount: the total. `None` without
/// datapoints (Python sosw raised there).
fn aggregate(statistic: &Statistic, points: &[Datapoint]) -> Option<f64> {
    let values: Vec<f64> = points
        .iter()
        .filter_map(|p| match statistic {
            Statistic::Average => p.average(),
            Statistic::Maximum => p.maximum(),
            Statistic::Minimum => p.minimum(),
            Statistic::Sum => p.sum(),
            Statistic::SampleCount => p.sample_count(),
            _ => None,
        })
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(match statistic {
        Statistic::Maximum => values.iter().copied().fold(f64::MIN, f64::max),
        Statistic::Minimum => values.iter().copied().fold(f64::MAX, f64::min),
        Statistic::Sum | Statistic::SampleCount => values.iter().sum(),
        _ => values.iter().sum::<f64>() / values.len() as f64,
    })
}

#[async_trait]
impl MetricSource for CloudWatchMetrics {
    async fn fetch(&self, details: &MetricDetails, now: Time) -> Result<f64, MetricError> {
        match details {
            MetricDetails::CloudWatch(m) => self.fetch_cloudwatch(m, now).await,
            other => self.fallback.fetch(other, now).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(avg: f64, max: f64) -> Datapoint {
        Datapoint::builder()
            .average(avg)
            .maximum(max)
            .minimum(avg / 2.0)
            .sum(avg * 2.0)
            .sample_count(2.0)
            .build()
    }

    #[test]
    fn aggregation_eco_10() {
        // ECO-10: datapoints with averages 10 and 20 → 15.
        let points = [point(10.0, 12.0), point(20.0, 31.0)];
        assert_eq!(aggregate(&Statistic::Average, &points), Some(15.0));
        assert_eq!(aggregate(&Statistic::Maximum, &points), Some(31.0));
        assert_eq!(aggregate(&Statistic::Minimum, &points), Some(5.0));
        assert_eq!(aggregate(&Statistic::Sum, &points), Some(60.0));
        assert_eq!(aggregate(&Statistic::SampleCount, &points), Some(4.0));
        assert_eq!(
            aggregate(&Statistic::Average, &[]),
            None,
            "no datapoints is no value, not a crash"
        );
    }
}
