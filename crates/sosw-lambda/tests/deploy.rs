//! The deployment files agree with the code: the example config loads for every essential without a warning, the
//! template names each function as Python sosw does and as the Lambda binaries' essentials report themselves, and it
//! makes the tables `sosw init` makes. (Its IAM policies are checked where the essentials run: `end_to_end.rs`.)

mod common;

use sosw_core::{Config, Essential};
use sosw_lambda::{config_layers, Container};
use sosw_testkit::ManualClock;
use std::path::PathBuf;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file)
}

#[tokio::test]
async fn the_example_config_loads_for_every_essential() {
    // A file source reads no AWS service; the endpoint is never contacted.
    let aws = sosw_aws::Aws::local("http://127.0.0.1:9").await;
    let path = deploy("sosw_essential_config.example.json");
    let layers = config_layers(&aws, &path.display().to_string(), Essential::Orchestrator)
        .await
        .expect("readable");
    for e in Essential::ALL {
        let config = Config::from_layers(&layers, e).expect("valid");
        assert!(config.warnings.is_empty(), "{e:?}: {:?}", config.warnings);
        assert_eq!(config.labourers[0].id, "my_worker");
        Container::new(aws.clone(), config, e, ManualClock::at_secs(1_700_000_000)).expect("a container");
    }
}

#[test]
fn the_template_deploys_each_essential_under_its_python_name_and_binary() {
    let template = std::fs::read_to_string(deploy("template.yaml")).expect("template");
    for e in Essential::ALL {
        let name = e.function_name();
        assert!(template.contains(&format!("FunctionName: {name}\n")), "{name}");
        assert!(
            template.contains(&format!("BuildProperties: {{Binary: {name}}}")),
            "{name}"
        );
        assert!(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("src/bin/{name}.rs"))
                .exists(),
            "{name}"
        );
    }
}

/// A table as both sides describe it: keys, attribute types, and each index with its keys and projection.
type Shape = std::collections::BTreeMap<String, String>;

fn shape_of_template(table: &yaml_rust2::Yaml) -> Shape {
    let p = &table["Properties"];
    let keys = |ks: &yaml_rust2::Yaml| {
        ks.as_vec()
            .expect("KeySchema")
            .iter()
            .map(|k| {
                format!(
                    "{} {}",
                    k["AttributeName"].as_str().expect("name"),
                    k["KeyType"].as_str().expect("type")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut shape = Shape::new();
    shape.insert("keys".into(), keys(&p["KeySchema"]));
    let mut attributes: Vec<String> = p["AttributeDefinitions"]
        .as_vec()
        .expect("AttributeDefinitions")
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["AttributeName"].as_str().expect("name"),
                a["AttributeType"].as_str().expect("type")
            )
        })
        .collect();
    attributes.sort();
    shape.insert("attributes".into(), attributes.join(", "));
    for kind in ["GlobalSecondaryIndexes", "LocalSecondaryIndexes"] {
        for index in p[kind].as_vec().into_iter().flatten() {
            let projection = &index["Projection"];
            let mut non_key: Vec<&str> = projection["NonKeyAttributes"]
                .as_vec()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
                .collect();
            non_key.sort();
            shape.insert(
                format!("{kind} {}", index["IndexName"].as_str().expect("IndexName")),
                format!(
                    "{}; {} {}",
                    keys(&index["KeySchema"]),
                    projection["ProjectionType"].as_str().expect("ProjectionType"),
                    non_key.join(" ")
                ),
            );
        }
    }
    shape
}

fn shape_of_table(t: &aws_sdk_dynamodb::types::TableDescription) -> Shape {
    use aws_sdk_dynamodb::types::{KeySchemaElement, Projection};
    let keys = |ks: &[KeySchemaElement]| {
        ks.iter()
            .map(|k| format!("{} {}", k.attribute_name(), k.key_type().as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let projection = |p: Option<&Projection>| {
        let p = p.expect("a projection");
        let mut non_key: Vec<&str> = p.non_key_attributes().iter().map(String::as_str).collect();
        non_key.sort();
        format!(
            "{} {}",
            p.projection_type().map(|t| t.as_str()).unwrap_or("?"),
            non_key.join(" ")
        )
    };
    let mut shape = Shape::new();
    shape.insert("keys".into(), keys(t.key_schema()));
    let mut attributes: Vec<String> = t
        .attribute_definitions()
        .iter()
        .map(|a| format!("{} {}", a.attribute_name(), a.attribute_type().as_str()))
        .collect();
    attributes.sort();
    shape.insert("attributes".into(), attributes.join(", "));
    for i in t.global_secondary_indexes() {
        shape.insert(
            format!("GlobalSecondaryIndexes {}", i.index_name().unwrap_or("?")),
            format!("{}; {}", keys(i.key_schema()), projection(i.projection())),
        );
    }
    for i in t.local_secondary_indexes() {
        shape.insert(
            format!("LocalSecondaryIndexes {}", i.index_name().unwrap_or("?")),
            format!("{}; {}", keys(i.key_schema()), projection(i.projection())),
        );
    }
    shape
}

#[tokio::test]
#[ignore = "needs moto_server and Python sosw (SOSW_TEST_DYNAMODB, SOSW_TEST_PYTHON_SOSW); `.ci/run` starts them and runs ignored tests"]
async fn the_template_makes_the_tables_sosw_init_makes() {
    let Some(moto) = common::moto().await else {
        return;
    };
    let ours = moto.tables("tpl").await;
    let defaults = sosw_aws::Tables::default();
    let template = std::fs::read_to_string(deploy("template.yaml")).expect("template");
    let docs = yaml_rust2::YamlLoader::load_from_str(&template).expect("YAML");
    let by_name: std::collections::BTreeMap<String, Shape> = docs[0]["Resources"]
        .as_hash()
        .expect("Resources")
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::DynamoDB::Table"))
        .filter_map(|r| Some((r["Properties"]["TableName"].as_str()?.to_string(), shape_of_template(r))))
        .collect();
    let client = moto.aws.dynamodb();
    let pairs = [
        (&ours.tasks, &defaults.tasks),
        (&ours.closed, &defaults.closed),
        (&ours.retry, &defaults.retry),
        (&ours.meta, &defaults.meta),
        (&ours.jobs, &defaults.jobs),
        (&ours.labourers, &defaults.labourers),
    ];
    for (made, name) in pairs {
        let described = client.describe_table().table_name(made).send().await.expect("describe");
        let table = described.table().expect("a table");
        assert_eq!(
            by_name.get(name.as_str()),
            Some(&shape_of_table(table)),
            "`{name}`: the template's (left) and `sosw init`'s (right)"
        );
    }
    // And no table of the template that `init` does not make, but the config table (`!Ref ConfigTableName`: Python
    // sosw's config, read by the essentials, never made by `init`).
    let names: Vec<&str> = pairs.iter().map(|(_, n)| n.as_str()).collect();
    assert!(
        by_name
            .keys()
            .all(|n| names.contains(&n.as_str()) || n == "ConfigTableName"),
        "{:?}",
        by_name.keys()
    );
}
