//! The deployment files agree with the code: the example config loads for every essential without a warning, and
//! the template names each function as Python sosw does and as the Lambda binaries' essentials report themselves.

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
