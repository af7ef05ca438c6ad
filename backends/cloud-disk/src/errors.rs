//! What a failed EC2 call becomes: the AWS error document is read, its code classified
//! (one table), and the result turned into the WIT error the CO sees — AWS's own message
//! kept, credentials redacted before any message is built.
//!
//! Operations look at [`Failure::is`] for the few codes that mean success to them
//! (deleting what is already gone); everything else converts with `?`.

use std::fmt;

use kit::types::Error;

use crate::credentials::Credentials;
use crate::transport::{TransportError, TransportErrorKind};
use crate::xml;

/// How an AWS error code is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    /// Rejected credentials or missing IAM permissions: failed-precondition, saying so.
    Credentials,
    ResourceExhausted,
    /// Throttling: retried, then unavailable.
    Throttled,
    /// AWS-side failure (5xx): retried, then unavailable.
    ServerError,
    Internal,
}

const CODES: &[(&str, Class)] = &[
    ("InvalidParameterValue", Class::InvalidArgument),
    ("InvalidParameterCombination", Class::InvalidArgument),
    ("InvalidParameter", Class::InvalidArgument),
    ("MissingParameter", Class::InvalidArgument),
    ("InvalidZone.NotFound", Class::InvalidArgument),
    ("InvalidVolumeID.Malformed", Class::InvalidArgument),
    ("InvalidSnapshotID.Malformed", Class::InvalidArgument),
    ("InvalidInstanceID.Malformed", Class::InvalidArgument),
    ("InvalidVolume.NotFound", Class::NotFound),
    ("InvalidSnapshot.NotFound", Class::NotFound),
    ("InvalidInstanceID.NotFound", Class::NotFound),
    ("InvalidAttachment.NotFound", Class::NotFound),
    ("IdempotentParameterMismatch", Class::AlreadyExists),
    ("VolumeInUse", Class::FailedPrecondition),
    ("IncorrectState", Class::FailedPrecondition),
    ("IncorrectInstanceState", Class::FailedPrecondition),
    ("IncorrectModificationState", Class::FailedPrecondition),
    ("InvalidVolume.ZoneMismatch", Class::FailedPrecondition),
    ("InvalidSnapshot.InUse", Class::FailedPrecondition),
    ("VolumeLimitExceeded", Class::ResourceExhausted),
    ("AttachmentLimitExceeded", Class::ResourceExhausted),
    ("SnapshotLimitExceeded", Class::ResourceExhausted),
    ("MaxIOPSLimitExceeded", Class::ResourceExhausted),
    ("InsufficientVolumeCapacity", Class::ResourceExhausted),
    ("AuthFailure", Class::Credentials),
    ("UnauthorizedOperation", Class::Credentials),
    ("SignatureDoesNotMatch", Class::Credentials),
    ("InvalidClientTokenId", Class::Credentials),
    ("RequestExpired", Class::FailedPrecondition),
    ("RequestLimitExceeded", Class::Throttled),
    ("Throttling", Class::Throttled),
    ("InternalError", Class::ServerError),
    ("Unavailable", Class::ServerError),
    ("ServiceUnavailable", Class::ServerError),
];

/// The class of an error code; an unknown code is a server error when the status says so,
/// else internal.
pub fn classify(code: &str, status: u16) -> Class {
    CODES.iter().find(|(known, _)| *known == code).map(|(_, class)| *class).unwrap_or(if status >= 500 {
        Class::ServerError
    } else {
        Class::Internal
    })
}

/// An EC2 error document: `<Response><Errors><Error><Code/><Message/></Error></Errors>
/// <RequestID/></Response>`.
#[derive(Debug, PartialEq, Eq)]
pub struct AwsError {
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

impl AwsError {
    /// The error of a non-2xx response. A body that is no error document (a proxy's page)
    /// gives the code `HTTP <status>` and no message.
    pub fn from_response(status: u16, body: &str) -> AwsError {
        let parsed = xml::parse(body).ok().and_then(|doc| {
            let root = doc.root_element();
            let error = xml::child(root, "Errors").and_then(|errors| xml::child(errors, "Error"))?;
            Some(AwsError {
                code: xml::text(error, "Code")?.to_owned(),
                message: xml::text(error, "Message").unwrap_or_default().to_owned(),
                request_id: xml::text(root, "RequestID").map(str::to_owned),
            })
        });
        parsed.unwrap_or_else(|| AwsError { code: format!("HTTP {status}"), message: String::new(), request_id: None })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Aws(Class),
    Transport(TransportErrorKind),
    /// A 2xx response that is not the document the action answers.
    Malformed,
}

/// A failed EC2 call. Its message names the action and is already redacted.
#[derive(Debug)]
pub struct Failure {
    kind: Kind,
    code: Option<String>,
    message: String,
}

impl Failure {
    pub fn aws(action: &str, status: u16, error: AwsError, credentials: &Credentials) -> Failure {
        let class = classify(&error.code, status);
        let mut message = format!("EC2 {action} failed: {}", error.code);
        if !error.message.is_empty() {
            message.push_str(&format!(": {}", error.message));
        }
        if let Some(request_id) = &error.request_id {
            message.push_str(&format!(" (request id {request_id})"));
        }
        if class == Class::Credentials {
            message.push_str(
                "; AWS rejected the credentials or their permissions: check the AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) secrets and the IAM policy",
            );
        }
        Failure { kind: Kind::Aws(class), code: Some(error.code), message: credentials.redact(&message) }
    }

    pub fn transport(action: &str, error: TransportError, credentials: &Credentials) -> Failure {
        Failure {
            kind: Kind::Transport(error.kind),
            code: None,
            message: credentials.redact(&format!("EC2 {action} failed: {error}")),
        }
    }

    pub fn malformed(action: &str, detail: &str, credentials: &Credentials) -> Failure {
        Failure {
            kind: Kind::Malformed,
            code: None,
            message: credentials.redact(&format!("EC2 {action} gave an unexpected response: {detail}")),
        }
    }

    /// Whether AWS answered with error code `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// Throttling, AWS-side failures and timeouts may pass when tried again.
    pub fn retryable(&self) -> bool {
        self.throttled()
            || matches!(self.kind, Kind::Aws(Class::ServerError) | Kind::Transport(TransportErrorKind::Timeout))
    }

    /// AWS refused the request for its rate: it did nothing, so even an action that is
    /// not idempotent may be sent again.
    pub fn throttled(&self) -> bool {
        self.kind == Kind::Aws(Class::Throttled)
    }

    /// Notes that retrying stopped after `attempts` tries.
    pub fn gave_up(mut self, attempts: u32) -> Failure {
        self.message.push_str(&format!(" (gave up after {attempts} attempts)"));
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Error {
        let message = failure.message;
        match failure.kind {
            Kind::Aws(Class::InvalidArgument) => Error::InvalidArgument(message),
            Kind::Aws(Class::NotFound) => Error::NotFound(message),
            Kind::Aws(Class::AlreadyExists) => Error::AlreadyExists(message),
            Kind::Aws(Class::FailedPrecondition | Class::Credentials) | Kind::Transport(TransportErrorKind::Denied) => {
                Error::FailedPrecondition(message)
            }
            Kind::Aws(Class::ResourceExhausted) => Error::ResourceExhausted(message),
            Kind::Aws(Class::Throttled | Class::ServerError)
            | Kind::Transport(
                TransportErrorKind::Timeout | TransportErrorKind::Unreachable | TransportErrorKind::Failed,
            ) => Error::Unavailable(message),
            Kind::Aws(Class::Internal) | Kind::Malformed => Error::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::fake::{self, FakePlatform};

    fn credentials() -> Credentials {
        Credentials::load(&FakePlatform::new()).unwrap()
    }

    fn error_document(code: &str, message: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
             <Message>{message}</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>"
        )
    }

    fn wit_error(code: &str, status: u16) -> Error {
        let error = AwsError::from_response(status, &error_document(code, "the message"));
        Failure::aws("CreateVolume", status, error, &credentials()).into()
    }

    #[test]
    fn reads_the_error_document() {
        let body = include_str!("../fixtures/error.xml");
        assert_eq!(
            AwsError::from_response(400, body),
            AwsError {
                code: "InvalidVolume.NotFound".into(),
                message: "The volume 'vol-1234567890abcdef0' does not exist.".into(),
                request_id: Some("ea966190-f9aa-478e-9ede-example".into()),
            }
        );
    }

    #[test]
    fn a_body_that_is_no_error_document_names_the_status() {
        for body in ["<html>Bad Gateway</html>", "", "<Response><Errors/></Response>"] {
            let error = AwsError::from_response(502, body);
            assert_eq!(error.code, "HTTP 502");
            assert_eq!(classify(&error.code, 502), Class::ServerError);
        }
        assert_eq!(classify("HTTP 404", 404), Class::Internal);
    }

    #[test]
    fn codes_map_to_wit_errors() {
        type Variant = fn(&Error) -> bool;
        let table: &[(&str, u16, Variant)] = &[
            ("InvalidParameterValue", 400, |e| matches!(e, Error::InvalidArgument(_))),
            ("InvalidParameterCombination", 400, |e| matches!(e, Error::InvalidArgument(_))),
            ("MissingParameter", 400, |e| matches!(e, Error::InvalidArgument(_))),
            ("InvalidZone.NotFound", 400, |e| matches!(e, Error::InvalidArgument(_))),
            ("InvalidVolume.NotFound", 400, |e| matches!(e, Error::NotFound(_))),
            ("InvalidSnapshot.NotFound", 400, |e| matches!(e, Error::NotFound(_))),
            ("InvalidInstanceID.NotFound", 400, |e| matches!(e, Error::NotFound(_))),
            ("IdempotentParameterMismatch", 400, |e| matches!(e, Error::AlreadyExists(_))),
            ("VolumeInUse", 400, |e| matches!(e, Error::FailedPrecondition(_))),
            ("IncorrectState", 400, |e| matches!(e, Error::FailedPrecondition(_))),
            ("IncorrectInstanceState", 400, |e| matches!(e, Error::FailedPrecondition(_))),
            ("InvalidVolume.ZoneMismatch", 400, |e| matches!(e, Error::FailedPrecondition(_))),
            ("VolumeLimitExceeded", 400, |e| matches!(e, Error::ResourceExhausted(_))),
            ("AttachmentLimitExceeded", 400, |e| matches!(e, Error::ResourceExhausted(_))),
            ("SnapshotLimitExceeded", 400, |e| matches!(e, Error::ResourceExhausted(_))),
            ("MaxIOPSLimitExceeded", 400, |e| matches!(e, Error::ResourceExhausted(_))),
            ("InsufficientVolumeCapacity", 400, |e| matches!(e, Error::ResourceExhausted(_))),
            ("AuthFailure", 401, |e| matches!(e, Error::FailedPrecondition(m) if m.contains("credentials"))),
            ("UnauthorizedOperation", 403, |e| matches!(e, Error::FailedPrecondition(m) if m.contains("IAM"))),
            ("SignatureDoesNotMatch", 403, |e| matches!(e, Error::FailedPrecondition(m) if m.contains("credentials"))),
            ("InvalidClientTokenId", 403, |e| matches!(e, Error::FailedPrecondition(m) if m.contains("credentials"))),
            ("RequestLimitExceeded", 503, |e| matches!(e, Error::Unavailable(_))),
            ("Throttling", 400, |e| matches!(e, Error::Unavailable(_))),
            ("InternalError", 500, |e| matches!(e, Error::Unavailable(_))),
            ("Unavailable", 503, |e| matches!(e, Error::Unavailable(_))),
            ("SomethingNew", 503, |e| matches!(e, Error::Unavailable(_))),
            ("SomethingNew", 400, |e| matches!(e, Error::Internal(_))),
        ];
        for (code, status, expected) in table {
            let error = wit_error(code, *status);
            assert!(expected(&error), "{code}: {error:?}");
        }
    }

    #[test]
    fn messages_keep_aws_words_and_lose_credentials() {
        let message = format!(
            "The key {} with secret {} and token {} is bad",
            fake::ACCESS_KEY_ID,
            fake::SECRET_ACCESS_KEY,
            fake::SESSION_TOKEN
        );
        let error = AwsError::from_response(403, &error_document("AuthFailure", &message));
        let Error::FailedPrecondition(text) = Failure::aws("AttachVolume", 403, error, &credentials()).into() else {
            panic!("expected failed-precondition");
        };
        assert!(text.starts_with("EC2 AttachVolume failed: AuthFailure: The key [redacted] with secret"), "{text}");
        assert!(text.contains("(request id ea966190-f9aa-478e-9ede-example)"), "{text}");
        crate::fake::assert_no_credentials(&text);
    }

    #[test]
    fn retryable_failures() {
        let credentials = credentials();
        let aws = |code: &str, status| {
            let error = AwsError::from_response(status, &error_document(code, ""));
            Failure::aws("DescribeVolumes", status, error, &credentials)
        };
        let transport = |kind| {
            let error = TransportError { kind, detail: "POST http://127.0.0.1:1: nope".into() };
            Failure::transport("DescribeVolumes", error, &credentials)
        };
        assert!(aws("RequestLimitExceeded", 503).retryable());
        assert!(aws("RequestLimitExceeded", 503).throttled());
        assert!(aws("Throttling", 400).retryable());
        assert!(aws("InternalError", 500).retryable());
        assert!(!aws("InternalError", 500).throttled());
        assert!(!transport(TransportErrorKind::Timeout).throttled());
        assert!(aws("HTTP 502", 502).retryable());
        assert!(!aws("InvalidParameterValue", 400).retryable());
        assert!(!aws("AuthFailure", 401).retryable());
        assert!(transport(TransportErrorKind::Timeout).retryable());
        assert!(!transport(TransportErrorKind::Denied).retryable());
        assert!(!transport(TransportErrorKind::Unreachable).retryable());
        assert!(aws("VolumeInUse", 400).is("VolumeInUse"));
        assert!(!transport(TransportErrorKind::Timeout).is("VolumeInUse"));

        let denied: Error = transport(TransportErrorKind::Denied).into();
        assert!(
            matches!(&denied, Error::FailedPrecondition(m) if m == "EC2 DescribeVolumes failed: POST http://127.0.0.1:1: nope"),
            "{denied:?}"
        );
        let gave_up: Error = aws("RequestLimitExceeded", 503).gave_up(5).into();
        assert!(matches!(&gave_up, Error::Unavailable(m) if m.ends_with("(gave up after 5 attempts)")));
        let malformed: Error = Failure::malformed("DescribeVolumes", "not XML", &credentials).into();
        assert!(matches!(&malformed, Error::Internal(m) if m.contains("unexpected response: not XML")));
    }
}
