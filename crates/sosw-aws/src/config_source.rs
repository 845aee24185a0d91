//! Config rows as Python sosw keeps them (reference §4.1–4.3): the DynamoDB table `config` (`env` = `production`,
//! `config_name`, `config_value` holding JSON text) or SSM Parameter Store (`GetParameter` with decryption), named
//! `sosw_essential_config` and `<function>_config`. Unlike Python sosw, a config that cannot be read is an error,
//! never a silent `{}` (§7.23).

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use sosw_core::Essential;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigSourceError {
    /// AWS could not be reached, or throttled or failed the read: it may work when tried again.
    #[error("config `{name}` cannot be read from {source_name} now: {reason}")]
    Unavailable {
        name: String,
        source_name: String,
        reason: String,
    },
    /// The read was refused (no such table, no access): the config names a source that cannot serve it.
    #[error("config `{name}` cannot be read from {source_name}: {reason}")]
    Unreadable {
        name: String,
        source_name: String,
        reason: String,
    },
    #[error("config `{name}` in {source_name} is not a JSON object: {reason}")]
    NotAnObject {
        name: String,
        source_name: String,
        reason: String,
    },
    #[error("neither `sosw_essential_config` nor `{function}_config` exists in {source_name}")]
    Missing { function: String, source_name: String },
}

/// Where config rows come from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// The DynamoDB config table, rows of `env`.
    Dynamo {
        client: aws_sdk_dynamodb::Client,
        table: String,
        env: String,
    },
    Ssm {
        client: aws_sdk_ssm::Client,
    },
}

impl ConfigSource {
    /// The source a config spec names: `ssm:` (SSM Parameter Store) or `dynamodb:[TABLE]` (the config table, by
    /// default `config`, rows of env `SOSW_CONFIG_ENV`, by default `production`). `Ok(None)` for a spec of another
    /// kind (a file path); an error for `ssm:` followed by anything.
    pub fn from_spec(aws: &crate::Aws, spec: &str) -> Result<Option<ConfigSource>, String> {
        match spec.split_once(':') {
            Some(("ssm", "")) => Ok(Some(ConfigSource::Ssm { client: aws.ssm() })),
            Some(("ssm", rest)) => Err(format!(
                "config `{spec}`: `ssm:` reads the parameters `sosw_essential_config` and `<function>_config` and takes \
                 nothing after the colon, got `{rest}`"
            )),
            Some(("dynamodb", table)) => Ok(Some(ConfigSource::Dynamo {
                client: aws.dynamodb(),
                table: if table.is_empty() { "config".into() } else { table.into() },
                env: std::env::var("SOSW_CONFIG_ENV")
                    .ok()
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "production".into()),
            })),
            _ => Ok(None),
        }
    }

    fn name(&self) -> String {
        match self {
            ConfigSource::Dynamo { table, env, .. } => format!("DynamoDB table `{table}` (env `{env}`)"),
            ConfigSource::Ssm { .. } => "SSM Parameter Store".to_string(),
        }
    }

    /// One config by name: `Ok(None)` when there is no such row or parameter.
    pub async fn get(&self, name: &str) -> Result<Option<Value>, ConfigSourceError> {
        let unreadable = |transient: bool, reason: String| match transient {
            true => ConfigSourceError::Unavailable {
                name: name.to_string(),
                source_name: self.name(),
                reason,
            },
            false => ConfigSourceError::Unreadable {
                name: name.to_string(),
                source_name: self.name(),
                reason,
            },
        };
        let text = match self {
            ConfigSource::Dynamo { client, table, env } => {
                let out = client
                    .get_item()
                    .table_name(table)
                    .key("env", AttributeValue::S(env.clone()))
                    .key("config_name", AttributeValue::S(name.to_string()))
                    .send()
                    .await
                    .map_err(|e| {
                        unreadable(
                            transient(&e),
                            aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string(),
                        )
                    })?;
                match out.item().and_then(|i| i.get("config_value")) {
                    None => return Ok(None),
                    Some(AttributeValue::S(v)) => v.clone(),
                    Some(_) => {
                        return Err(ConfigSourceError::NotAnObject {
                            name: name.into(),
                            source_name: self.name(),
                            reason: "`config_value` is not a string".into(),
                        })
                    }
                }
            }
            ConfigSource::Ssm { client } => {
                match client.get_parameter().name(name).with_decryption(true).send().await {
                    Ok(out) => match out.parameter().and_then(|p| p.value()) {
                        Some(v) => v.to_string(),
                        None => return Ok(None),
                    },
                    Err(e) if e.as_service_error().is_some_and(|se| se.is_parameter_not_found()) => return Ok(None),
                    Err(e) => {
                        return Err(unreadable(
                            transient(&e),
                            aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(),
                        ))
                    }
                }
            }
        };
        let reason = match serde_json::from_str::<Value>(&text) {
            Ok(v @ Value::Object(_)) => return Ok(Some(v)),
            Ok(other) => format!("it is {}", sosw_core::payload::json_kind(&other)),
            Err(e) => format!("it does not parse as JSON ({e})"),
        };
        Err(ConfigSourceError::NotAnObject {
            name: name.into(),
            source_name: self.name(),
            reason,
        })
    }

    /// The layers of `essential`'s config, for `Config::from_layers`: `sosw_essential_config`, then
    /// `<function>_config` as the essential's own section (§4.3).
    pub async fn layers(&self, essential: Essential) -> Result<Vec<Value>, ConfigSourceError> {
        let shared = self.get("sosw_essential_config").await?;
        let own = self.get(essential.config_key()).await?;
        if shared.is_none() && own.is_none() {
            return Err(ConfigSourceError::Missing {
                function: essential.function_name().to_string(),
                source_name: self.name(),
            });
        }
        let mut layers = Vec::new();
        layers.extend(shared);
        if let Some(own) = own {
            let mut section = serde_json::Map::new();
            section.insert(essential.config_key().to_string(), own);
            layers.push(Value::Object(section));
        }
        Ok(layers)
    }
}

/// Whether a failed read may succeed if tried again: AWS not reached or timed out, throttling, a server error.
fn transient<E>(e: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => {
            s.raw().status().is_server_error() || e.code().is_some_and(|c| crate::sdk::THROTTLING_CODES.contains(&c))
        }
        _ => false,
    }
}
