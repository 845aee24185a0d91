//! The SAM template's IAM policies, checked against what the essentials actually send: each request moto recorded
//! while one essential's handler ran is turned into the IAM action and resource AWS would authorise, and that
//! essential's function must be granted it. (moto authorises nothing, so without this a missing grant only shows
//! on AWS, as an `AccessDeniedException` in production.)

use serde_json::Value;
use sosw_aws::Tables;
use sosw_testkit::moto::{body_of, header};
use std::collections::BTreeMap;
use yaml_rust2::{Yaml, YamlLoader};

/// One statement: its actions and resources, as the template writes them (`!Sub` strings, `!Ref` names).
#[derive(Debug)]
struct Statement {
    sid: String,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// The template's policies by function name, and how this test's resources are named in it.
pub struct Policies {
    by_function: BTreeMap<String, Vec<Statement>>,
    /// A resource this test made → how the template names it (tables, the worker's ARN, the topic, the bucket).
    names: Vec<(String, String)>,
}

/// How the template names the table called `name` in Python sosw's layout.
fn table_arn(name: &str) -> String {
    format!("arn:${{AWS::Partition}}:dynamodb:${{AWS::Region}}:${{AWS::AccountId}}:table/{name}")
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a.iter().flat_map(strings).collect(),
        Yaml::String(s) => vec![s.clone()],
        other => panic!("expected a string or a list of strings in a policy, got {other:?}"),
    }
}

/// Whether `pattern` (IAM's `*` wildcard) matches `text`.
fn matches(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && matches(rest, &tail[i..]))
        }
    }
}

impl Policies {
    /// `deploy/template.yaml`'s policies; `tables`, `worker_arn`, `topic_arn` and `bucket` are what the test made
    /// in place of the template's tables, `LabourerFunctionArns`, `DeadTasksTopic` and `QueueBucket`.
    pub fn of_template(tables: &Tables, worker_arn: &str, topic_arn: Option<&str>, bucket: Option<&str>) -> Policies {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/template.yaml");
        let text = std::fs::read_to_string(path).expect("the template");
        let docs = YamlLoader::load_from_str(&text).expect("the template is YAML");
        let resources = docs[0]["Resources"].as_hash().expect("Resources");
        let mut by_function = BTreeMap::new();
        for (_, resource) in resources {
            if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
                continue;
            }
            let props = &resource["Properties"];
            let name = props["FunctionName"].as_str().expect("FunctionName").to_string();
            let mut statements = Vec::new();
            for policy in props["Policies"].as_vec().expect("Policies") {
                for st in policy["Statement"].as_vec().expect("Statement") {
                    assert_eq!(st["Effect"].as_str(), Some("Allow"), "{name}: {st:?}");
                    statements.push(Statement {
                        sid: st["Sid"].as_str().unwrap_or("?").to_string(),
                        actions: strings(&st["Action"]),
                        resources: strings(&st["Resource"]),
                    });
                }
            }
            by_function.insert(name, statements);
        }
        let defaults = Tables::default();
        let mut names = vec![
            (tables.tasks.clone(), table_arn(&defaults.tasks)),
            (tables.closed.clone(), table_arn(&defaults.closed)),
            (tables.retry.clone(), table_arn(&defaults.retry)),
            (tables.meta.clone(), table_arn(&defaults.meta)),
            (tables.jobs.clone(), table_arn(&defaults.jobs)),
            (tables.labourers.clone(), table_arn(&defaults.labourers)),
            (worker_arn.to_string(), "LabourerFunctionArns".to_string()),
        ];
        if let Some(topic) = topic_arn {
            names.push((topic.to_string(), "DeadTasksTopic".to_string()));
        }
        if let Some(bucket) = bucket {
            names.push((bucket.to_string(), "${QueueBucket.Arn}".to_string()));
        }
        Policies { by_function, names }
    }

    /// Names one more resource of this test (`ours`) as the template does (`theirs`).
    pub fn naming(mut self, ours: &str, theirs: &str) -> Policies {
        self.names.push((ours.to_string(), theirs.to_string()));
        self
    }

    /// The template's name for a resource of this test; a resource the test did not name fails it.
    fn named(&self, resource: &str) -> String {
        self.names
            .iter()
            .find_map(|(ours, theirs)| {
                if resource == ours {
                    Some(theirs.clone())
                } else {
                    let rest = resource.strip_prefix(ours.as_str())?;
                    rest.starts_with('/').then(|| format!("{theirs}{rest}"))
                }
            })
            .unwrap_or_else(|| {
                panic!("a request on `{resource}`, which this test did not name in the template's terms")
            })
    }

    /// Every (IAM action, resource in the template's terms) that `entry` needs.
    fn needs(&self, entry: &Value) -> Vec<(String, String)> {
        let auth = header(entry, "authorization").unwrap_or_default();
        let service = auth.split('/').nth(3).unwrap_or_default();
        let body = body_of(entry);
        let url = entry["url"].as_str().unwrap_or_default();
        match service {
            "dynamodb" => {
                let op = header(entry, "x-amz-target")
                    .and_then(|t| t.rsplit('.').next())
                    .expect("a DynamoDB request names its operation");
                let body: Value = serde_json::from_slice(&body).expect("a DynamoDB request is JSON");
                let table = |name: &Value| self.named(name.as_str().expect("a table name"));
                match op {
                    "BatchGetItem" | "BatchWriteItem" => body["RequestItems"]
                        .as_object()
                        .expect("RequestItems")
                        .keys()
                        .map(|t| (format!("dynamodb:{op}"), self.named(t)))
                        .collect(),
                    "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
                        .as_array()
                        .expect("TransactItems")
                        .iter()
                        .flat_map(|item| item.as_object().expect("an action").iter())
                        .map(|(kind, action)| {
                            let iam = match kind.as_str() {
                                "Put" => "PutItem",
                                "Update" => "UpdateItem",
                                "Delete" => "DeleteItem",
                                "ConditionCheck" => "ConditionCheckItem",
                                "Get" => "GetItem",
                                other => panic!("a transaction action `{other}`"),
                            };
                            (format!("dynamodb:{iam}"), table(&action["TableName"]))
                        })
                        .collect(),
                    _ => {
                        let mut resource = table(&body["TableName"]);
                        if let Some(index) = body["IndexName"].as_str() {
                            resource = format!("{resource}/index/{index}");
                        }
                        vec![(format!("dynamodb:{op}"), resource)]
                    }
                }
            }
            "lambda" => {
                let function = url
                    .split("/functions/")
                    .nth(1)
                    .and_then(|rest| rest.strip_suffix("/invocations"))
                    .unwrap_or_else(|| panic!("a Lambda request other than Invoke: {url}"));
                let function = percent_decode(function);
                vec![("lambda:InvokeFunction".into(), self.named(&function))]
            }
            "sns" | "monitoring" => {
                let form = String::from_utf8(body).expect("a form");
                let field = |name: &str| {
                    form.split('&')
                        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                        .map(|v| percent_decode(&v.replace('+', " ")))
                };
                let action = field("Action").expect("an Action");
                if service == "sns" {
                    let topic = field("TopicArn").expect("a TopicArn");
                    vec![(format!("sns:{action}"), self.named(&topic))]
                } else {
                    vec![(format!("cloudwatch:{action}"), "*".into())]
                }
            }
            "s3" => {
                let path = url.splitn(4, '/').nth(3).unwrap_or_default();
                let path = percent_decode(path.split('?').next().unwrap_or_default());
                assert!(
                    path.trim_end_matches('/').contains('/'),
                    "an S3 request on a bucket, not an object (s3:ListBucket and others): {url}"
                );
                let action = match entry["method"].as_str() {
                    Some("GET") => "GetObject",
                    Some("PUT") => "PutObject",
                    Some("DELETE") => "DeleteObject",
                    other => panic!("an S3 request {other:?} {url}"),
                };
                vec![(format!("s3:{action}"), self.named(&path))]
            }
            other => panic!("a request to `{other}`, which no policy covers: {entry}"),
        }
    }

    /// Fails unless `function`'s policies grant every request in `requests`; returns how many it checked.
    pub fn assert_granted(&self, function: &str, requests: &[Value]) -> usize {
        let statements = self
            .by_function
            .get(function)
            .unwrap_or_else(|| panic!("the template has no function `{function}`"));
        let mut missing = Vec::new();
        let mut checked = 0;
        for entry in requests {
            for (action, resource) in self.needs(entry) {
                checked += 1;
                let granted = statements.iter().any(|s| {
                    s.actions.iter().any(|a| matches(a, &action)) && s.resources.iter().any(|r| matches(r, &resource))
                });
                if !granted && !missing.contains(&(action.clone(), resource.clone())) {
                    missing.push((action, resource));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "deploy/template.yaml does not let {function} do what it does:\n{}\n(its statements: {})",
            missing
                .iter()
                .map(|(a, r)| format!("  {a} on {r}"))
                .collect::<Vec<_>>()
                .join("\n"),
            statements.iter().map(|s| s.sid.as_str()).collect::<Vec<_>>().join(", ")
        );
        checked
    }
}

/// A function of this deployment (`sosw_scheduler` invoking itself), as the template names it.
pub fn template_function(function: &str) -> String {
    let name = function.rsplit(':').next().unwrap_or(function);
    format!("arn:${{AWS::Partition}}:lambda:${{AWS::Region}}:${{AWS::AccountId}}:function:{name}")
}

/// `%XX` escapes decoded (a URL path or a form value; a form's `+` is decoded by its caller).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8")
}
