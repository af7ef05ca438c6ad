//! Backend and sandbox failures as gRPC statuses: each backend error variant maps 1:1 to
//! the code of the same name; a timeout, a memory blow-up and a trap map to
//! DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and INTERNAL, naming the backend. What a backend
//! wrote reaches the CO at most [`MAX_MESSAGE`] bytes long, control characters escaped:
//! a huge message would turn the real code into a client's RESOURCE_EXHAUSTED.

use tonic::Status;

use crate::runtime::{BackendError, CallError};

impl From<CallError> for Status {
    fn from(e: CallError) -> Status {
        let message = for_the_co(&e.to_string());
        match e {
            CallError::Backend { error, .. } => match error {
                BackendError::InvalidArgument(_) => Status::invalid_argument(message),
                BackendError::NotFound(_) => Status::not_found(message),
                BackendError::AlreadyExists(_) => Status::already_exists(message),
                BackendError::FailedPrecondition(_) => Status::failed_precondition(message),
                BackendError::OutOfRange(_) => Status::out_of_range(message),
                BackendError::ResourceExhausted(_) => Status::resource_exhausted(message),
                BackendError::Aborted(_) => Status::aborted(message),
                BackendError::Unavailable(_) => Status::unavailable(message),
                BackendError::Unimplemented(_) => Status::unimplemented(message),
                BackendError::Internal(_) => Status::internal(message),
            },
            CallError::Timeout { .. } => Status::deadline_exceeded(message),
            CallError::OutOfMemory { .. } => Status::resource_exhausted(message),
            CallError::Trap { .. } => Status::internal(message),
        }
    }
}

/// A backend answered with something the host cannot pass on (a malformed id, say).
pub fn bad_answer(backend: &str, what: impl std::fmt::Display) -> Status {
    Status::internal(format!("backend {backend} returned {what}"))
}

/// Bytes of a backend-made message the CO sees.
pub const MAX_MESSAGE: usize = 1024;

/// `message` with control characters escaped, cut at [`MAX_MESSAGE`] bytes.
fn for_the_co(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE + 32));
    for c in message.chars() {
        let before = out.len();
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > MAX_MESSAGE {
            out.truncate(before);
            out.push_str(&format!("… ({} bytes in all)", message.len()));
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_co_short_and_escaped() {
        assert_eq!(for_the_co("volume \"x\" not found"), "volume \"x\" not found");
        assert_eq!(for_the_co("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
        let huge = for_the_co(&"é".repeat(1 << 19));
        assert!(huge.len() <= MAX_MESSAGE + 32, "{}", huge.len());
        assert!(huge.ends_with("… (1048576 bytes in all)"), "{}", &huge[huge.len() - 40..]);
        let error = CallError::Backend { backend: "bad".into(), error: BackendError::NotFound("x".repeat(1 << 20)) };
        let status = Status::from(error);
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().starts_with("backend bad: xxx") && status.message().len() < 1100);
    }
}
