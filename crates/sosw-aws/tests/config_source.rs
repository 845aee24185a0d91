//! Config rows from the DynamoDB `config` table and from SSM, against a local moto_server (`SOSW_TEST_DYNAMODB`).

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use serde_json::json;
use sosw_aws::{ConfigSource, ConfigSourceError};
use sosw_core::{Config, Essential};

fn endpoint() -> Option<String> {
    sosw_testkit::service("SOSW_TEST_DYNAMODB")
}

fn max_inv(layers: &[serde_json::Value], e: Essential) -> u32 {
    Config::from_layers(layers, e).expect("config").labourers[0].max_simultaneous_invocations
}

#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn config_rows_from_dynamodb() {
    let Some(endpoint) = endpoint() else { return };
    let sdk = sosw_aws::Aws::local(&endpoint).await.sdk().clone();
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("config{}", std::process::id());
    let key = |n: &str, k: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(k)
            .build()
            .expect("key")
    };
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attr")
    };
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("env", KeyType::Hash))
        .key_schema(key("config_name", KeyType::Range))
        .attribute_definitions(attr("env"))
        .attribute_definitions(attr("config_name"))
        .send()
        .await
        .expect("table");
    for (name, value) in [
        (
            "sosw_essential_config",
            json!({"task_config": {"labourers": {"w": {"command": "true", "max_simultaneous_invocations": 2}}}}),
        ),
        (
            "sosw_orchestrator_config",
            json!({"task_config": {"labourers": {"w": {"max_simultaneous_invocations": 7}}}}),
        ),
        ("broken_config", json!("not an object")),
    ] {
        client
            .put_item()
            .table_name(&table)
            .item("env", AttributeValue::S("production".into()))
            .item("config_name", AttributeValue::S(name.into()))
            .item("config_value", AttributeValue::S(value.to_string()))
            .send()
            .await
            .expect("row");
    }
    let source = ConfigSource::Dynamo {
        client: client.clone(),
        table: table.clone(),
        env: "production".into(),
    };
    assert_eq!(
        max_inv(
            &source.layers(Essential::Orchestrator).await.expect("layers"),
            Essential::Orchestrator
        ),
        7
    );
    assert_eq!(
        max_inv(
            &source.layers(Essential::Scavenger).await.expect("layers"),
            Essential::Scavenger
        ),
        2
    );
    assert_eq!(source.get("nothing_config").await, Ok(None));
    let broken = source.get("broken_config").await;
    assert!(
        matches!(&broken, Err(e @ ConfigSourceError::NotAnObject { .. }) if e.to_string().contains("broken_config")
            && (e.to_string().contains("does not parse") || e.to_string().contains("it is "))),
        "{broken:?}"
    );
    let dev = ConfigSource::Dynamo {
        client: client.clone(),
        table: table.clone(),
        env: "dev".into(),
    };
    let err = dev.layers(Essential::Orchestrator).await.expect_err("no rows for dev");
    assert!(matches!(err, ConfigSourceError::Missing { .. }), "{err}");
    let gone = ConfigSource::Dynamo {
        client,
        table: "no_such_config_table".into(),
        env: "production".into(),
    };
    let err = gone
        .layers(Essential::Orchestrator)
        .await
        .expect_err("unreadable, not silently empty");
    assert!(matches!(err, ConfigSourceError::Unreadable { .. }), "{err}");
}

#[tokio::test]
#[ignore = "needs moto_server (SOSW_TEST_DYNAMODB); `.ci/run` starts it and runs ignored tests"]
async fn config_parameters_from_ssm() {
    let Some(endpoint) = endpoint() else { return };
    let sdk = sosw_aws::Aws::local(&endpoint).await.sdk().clone();
    let client = aws_sdk_ssm::Client::new(&sdk);
    client
        .put_parameter()
        .name("sosw_scheduler_config")
        .value(
            json!({"task_config": {"labourers": {"w": {"command": "true", "max_simultaneous_invocations": 4}}}})
                .to_string(),
        )
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .expect("parameter");
    let source = ConfigSource::Ssm { client };
    let layers = source.layers(Essential::Scheduler).await.expect("layers");
    assert_eq!(max_inv(&layers, Essential::Scheduler), 4);
    assert_eq!(source.get("sosw_no_such_config").await, Ok(None));
}

#[tokio::test]
async fn config_specs_name_their_source() {
    // Building a source contacts nothing.
    let aws = sosw_aws::Aws::local("http://127.0.0.1:9").await;
    match ConfigSource::from_spec(&aws, "dynamodb:") {
        Ok(Some(ConfigSource::Dynamo { table, .. })) => assert_eq!(table, "config"),
        other => panic!("{other:?}"),
    }
    match ConfigSource::from_spec(&aws, "dynamodb:prod-config") {
        Ok(Some(ConfigSource::Dynamo { table, .. })) => assert_eq!(table, "prod-config"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ConfigSource::from_spec(&aws, "ssm:"),
        Ok(Some(ConfigSource::Ssm { .. }))
    ));
    let err = ConfigSource::from_spec(&aws, "ssm:/prod").expect_err("refused");
    assert!(err.contains("`/prod`"), "{err}");
    assert!(matches!(ConfigSource::from_spec(&aws, "config/sosw.json"), Ok(None)));
}
