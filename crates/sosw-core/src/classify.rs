//! Whose fault is a failed invocation: the task's, the labourer's, or ours. Pure tables that the invokers consult,
//! so that a configuration mistake (a wrong URL path, a typo in a function ARN, a missing permission) never closes
//! a queue of tasks as dead (issue #8.9).
//!
//! | failure | kind | what happens |
//! |---|---|---|
//! | HTTP 429, 503; Lambda throttling | `Throttled` | back to the queue, no attempt spent |
//! | HTTP 401, 403, 404, 405, 407, 410, 421, 426; connection refused, DNS, TLS; Lambda ResourceNotFound, AccessDenied, KMS / ENI / subnet / security group / image / state errors; an endpoint that does not speak Lambda's API | `Labourer` | back to the queue, no attempt spent, the labourer is held back |
//! | cannot start a worker: out of file descriptors, memory or processes | `Local` | back to the queue, no attempt spent, the labourer's pass stops |
//! | HTTP 400, 413, 414, 415, 422 and other 4xx; Lambda RequestTooLarge, InvalidRequestContent, UnsupportedMediaType | `Permanent` | this task can never succeed: closed as dead |
//! | HTTP 408, 425, 5xx (but 503); Lambda service errors | `Transient` | a spent attempt: retried later |
//! | timed out after sending | `Unknown` | left running; expires if nobody reports |

use crate::decide::FailureKind;

/// The kind of a non-2xx HTTP answer from a worker endpoint; `None` for a success.
pub fn http_status(status: u16) -> Option<FailureKind> {
    Some(match status {
        200..=299 => return None,
        429 | 503 => FailureKind::Throttled,
        // A request that took too long, or came too early: nothing is wrong with the task.
        408 | 425 => FailureKind::Transient,
        // The endpoint is wrong, or we may not use it: true of every task.
        401 | 403 | 404 | 405 | 407 | 410 | 421 | 426 => FailureKind::Labourer,
        400..=499 => FailureKind::Permanent,
        // 1xx/3xx that reqwest did not follow: the URL is not a worker endpoint.
        100..=199 | 300..=399 => FailureKind::Labourer,
        _ => FailureKind::Transient,
    })
}

/// How a request to a worker failed before an HTTP answer came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// sosw could not open a connection for a reason of its own (out of file descriptors or memory).
    Resources,
    /// No connection: refused, unreachable, DNS or TLS failure. The request certainly did not arrive.
    Connect,
    /// The request could not even be built (an invalid URL or header).
    Request,
    /// Timed out or broke after the request may have been sent.
    AfterSending,
}

pub fn http_transport(t: Transport) -> FailureKind {
    match t {
        Transport::Resources => FailureKind::Local,
        Transport::Connect | Transport::Request => FailureKind::Labourer,
        Transport::AfterSending => FailureKind::Unknown,
    }
}

/// The kind of a Lambda `Invoke` error code.
pub fn lambda_error_code(code: &str) -> FailureKind {
    match code {
        "TooManyRequestsException" | "EC2ThrottledException" | "ThrottlingException" => FailureKind::Throttled,
        "InvalidRequestContentException" | "RequestTooLargeException" | "UnsupportedMediaTypeException" => {
            FailureKind::Permanent
        }
        "ResourceNotFoundException"
        | "AccessDeniedException"
        | "AccessDeniedExceptionException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "InvalidParameterValueException"
        | "ResourceConflictException"
        | "ResourceNotReadyException"
        | "InvalidRuntimeException"
        | "InvalidZipFileException"
        | "InvalidSecurityGroupIDException"
        | "InvalidSubnetIDException"
        | "SubnetIPAddressLimitReachedException"
        | "ENILimitReachedException"
        | "EC2AccessDeniedException"
        | "EFSMountConnectivityException"
        | "EFSMountFailureException"
        | "EFSMountTimeoutException"
        | "EFSIOException"
        | "SnapStartNotReadyException"
        | "SnapStartException"
        | "RecursiveInvocationException" => FailureKind::Labourer,
        code if code.starts_with("KMS") => FailureKind::Labourer,
        _ => FailureKind::Transient,
    }
}

/// How a Lambda `Invoke` failed without an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LambdaTransport {
    /// The request could not be built.
    Construction,
    /// No connection to the endpoint (refused, DNS): the request certainly did not arrive.
    Connect,
    /// An answer came that is not Lambda's (an endpoint that does not speak the Lambda API).
    UnreadableResponse,
    /// An HTTP error status without a Lambda error code (a proxy's 502, a web server's 404): as for HTTP workers.
    Status(u16),
    /// Timed out, or broke, after the request may have been sent.
    AfterSending,
}

pub fn lambda_transport(t: LambdaTransport) -> FailureKind {
    match t {
        LambdaTransport::Construction | LambdaTransport::Connect | LambdaTransport::UnreadableResponse => {
            FailureKind::Labourer
        }
        LambdaTransport::Status(status) => http_status(status).unwrap_or(FailureKind::Labourer),
        LambdaTransport::AfterSending => FailureKind::Unknown,
    }
}

/// Why a worker process could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnFailure {
    /// Out of file descriptors, memory or processes (EMFILE, ENFILE, ENOMEM, EAGAIN): our own trouble.
    Resources,
    /// The program is missing or not executable (it was there when the config loaded).
    Program,
    /// Anything else.
    Other,
}

pub fn spawn(f: SpawnFailure) -> FailureKind {
    match f {
        SpawnFailure::Resources => FailureKind::Local,
        SpawnFailure::Program => FailureKind::Labourer,
        SpawnFailure::Other => FailureKind::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureKind::*;

    #[test]
    fn http_statuses() {
        let table: &[(u16, Option<FailureKind>)] = &[
            (200, None),
            (202, None),
            (204, None),
            (301, Some(Labourer)),
            (400, Some(Permanent)),
            (401, Some(Labourer)),
            (403, Some(Labourer)),
            (404, Some(Labourer)),
            (405, Some(Labourer)),
            (410, Some(Labourer)),
            (413, Some(Permanent)),
            (408, Some(Transient)),
            (415, Some(Permanent)),
            (422, Some(Permanent)),
            (429, Some(Throttled)),
            (500, Some(Transient)),
            (502, Some(Transient)),
            (503, Some(Throttled)),
            (504, Some(Transient)),
        ];
        for (status, kind) in table {
            assert_eq!(http_status(*status), *kind, "{status}");
        }
        assert_eq!(http_transport(Transport::Resources), Local);
        assert_eq!(http_transport(Transport::Connect), Labourer);
        assert_eq!(http_transport(Transport::Request), Labourer);
        assert_eq!(http_transport(Transport::AfterSending), Unknown);
    }

    #[test]
    fn lambda_codes() {
        let table: &[(&str, FailureKind)] = &[
            ("TooManyRequestsException", Throttled),
            ("EC2ThrottledException", Throttled),
            ("ResourceNotFoundException", Labourer),
            ("AccessDeniedException", Labourer),
            ("KMSAccessDeniedException", Labourer),
            ("KMSDisabledException", Labourer),
            ("ENILimitReachedException", Labourer),
            ("InvalidSubnetIDException", Labourer),
            ("UnrecognizedClientException", Labourer),
            ("RequestTooLargeException", Permanent),
            ("InvalidRequestContentException", Permanent),
            ("ServiceException", Transient),
            ("SomethingNew", Transient),
        ];
        for (code, kind) in table {
            assert_eq!(lambda_error_code(code), *kind, "{code}");
        }
        assert_eq!(lambda_transport(LambdaTransport::Connect), Labourer);
        assert_eq!(lambda_transport(LambdaTransport::UnreadableResponse), Labourer);
        assert_eq!(lambda_transport(LambdaTransport::Status(404)), Labourer);
        assert_eq!(lambda_transport(LambdaTransport::Status(502)), Transient);
        assert_eq!(lambda_transport(LambdaTransport::Status(200)), Labourer);
        assert_eq!(lambda_transport(LambdaTransport::AfterSending), Unknown);
    }

    #[test]
    fn spawn_failures() {
        assert_eq!(spawn(SpawnFailure::Resources), Local);
        assert_eq!(spawn(SpawnFailure::Program), Labourer);
        assert_eq!(spawn(SpawnFailure::Other), Transient);
    }
}
