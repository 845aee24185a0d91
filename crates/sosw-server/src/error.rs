//! The API's errors: `{"error": {"code", "message"}}` with the HTTP status that says what to do about it.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sosw_core::ports::StoreError;
use sosw_engine::control::ControlError;
use sosw_engine::tasks::CreateError;
use sosw_engine::{EngineError, ScheduleError, WorkerAssistantError};

/// A refused or failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable word for scripts: `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `too_large`, `timeout`, `unavailable`, `internal`.
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        if self.status == StatusCode::UNAUTHORIZED {
            return (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.status, body).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let message = e.to_string();
        match e {
            StoreError::NotFound(_) => ApiError::not_found(message),
            StoreError::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            // A report token's invocation was superseded between the token check and the write.
            StoreError::StaleReport { .. } => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            StoreError::Invalid(_) => ApiError::bad_request(message),
            e if e.is_retryable() => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
            _ => {
                tracing::error!("store error: {message}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::UnknownLabourer(_) => ApiError::not_found(e.to_string()),
            EngineError::Invoker { .. } => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Engine(e) => e.into(),
            ControlError::Store(e) => e.into(),
        }
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> ApiError {
        match e {
            CreateError::Config(e) => e.into(),
            CreateError::Store(e) => e.into(),
        }
    }
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> ApiError {
        match e {
            ScheduleError::Config(e) => e.into(),
            ScheduleError::Store(e) => e.into(),
            ScheduleError::Generator(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
            other @ (ScheduleError::Job(_) | ScheduleError::QueueFull(_) | ScheduleError::TooBig { .. }) => {
                ApiError::bad_request(other.to_string())
            }
        }
    }
}

impl From<WorkerAssistantError> for ApiError {
    fn from(e: WorkerAssistantError) -> ApiError {
        match e {
            WorkerAssistantError::Store(e) => e.into(),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_what_the_client_should_do() {
        let cases = [
            (StoreError::NotFound("t".into()), StatusCode::NOT_FOUND, "not_found"),
            (
                StoreError::StaleReport {
                    task_id: "t".into(),
                    reported: 1,
                    latest: 2,
                },
                StatusCode::FORBIDDEN,
                "forbidden",
            ),
            (
                StoreError::conflict("t", "has not been invoked yet"),
                StatusCode::CONFLICT,
                "conflict",
            ),
            (
                StoreError::Invalid("queue full".into()),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                StoreError::Throttled { retry_after: None },
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (
                StoreError::Unavailable("gone".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (
                StoreError::Schema("old".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
        ];
        for (e, status, code) in cases {
            let what = e.to_string();
            let api = ApiError::from(e);
            assert_eq!((api.status, api.code), (status, code), "{what}");
            assert_eq!(api.message, what);
        }
        let e = ApiError::from(WorkerAssistantError::MissingAction);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
