//! Backend and sandbox failures as gRPC statuses: each backend error variant maps 1:1 to
//! the code of the same name; a timeout, a memory blow-up and a trap map to
//! DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and INTERNAL, naming the backend.

use tonic::Status;

use crate::runtime::{BackendError, CallError};

impl From<CallError> for Status {
    fn from(e: CallError) -> Status {
        let message = e.to_string();
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
