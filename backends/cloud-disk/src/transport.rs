//! Outgoing HTTP: the [`Transport`] trait the EC2 client sends through, and the transport
//! of this build — `wasi:http/outgoing-handler` inside a component (the host allows only
//! the origins its grant lists), none natively, where the unit tests bring a fake EC2.

use std::fmt;

#[cfg(target_arch = "wasm32")]
mod wasi_http;

#[cfg(target_arch = "wasm32")]
pub use wasi_http::WasiHttp as HostTransport;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One request. `authority` (`host[:port]`) doubles as the `Host` header: the transport
/// sets it from here, so `headers` never holds one. Its `Debug` shows header names only:
/// their values carry credentials.
#[derive(Clone)]
pub struct HttpRequest {
    pub method: &'static str,
    pub scheme: Scheme,
    pub authority: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("origin", &self.origin())
            .field("path_and_query", &self.path_and_query)
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl HttpRequest {
    /// `scheme://authority`, the part of the URL a message may name.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.authority)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// The host's grant does not allow this origin (or outgoing HTTP at all).
    Denied,
    /// Connecting, or waiting for the response, took longer than the request's timeout.
    Timeout,
    /// The name did not resolve or nothing accepted the connection.
    Unreachable,
    /// Anything else: TLS, protocol, an oversized response.
    Failed,
}

/// Why a request got no response. `detail` names the origin at most, never a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub detail: String,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

pub trait Transport {
    fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// Natively there is no wasi:http; the crate is only built natively for its unit tests,
/// which never reach the real host glue.
#[cfg(not(target_arch = "wasm32"))]
pub struct HostTransport;

#[cfg(not(target_arch = "wasm32"))]
impl Transport for HostTransport {
    fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        Err(TransportError {
            kind: TransportErrorKind::Denied,
            detail: format!("no outgoing HTTP outside a component (to {})", request.origin()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::fake;

    #[test]
    fn debug_shows_no_header_values() {
        let request = HttpRequest {
            method: "POST",
            scheme: Scheme::Https,
            authority: "ec2.us-east-1.amazonaws.com".into(),
            path_and_query: "/".into(),
            headers: vec![("x-amz-security-token".into(), fake::SESSION_TOKEN.into())],
            body: b"Action=DescribeVolumes".to_vec(),
        };
        let debug = format!("{request:?}");
        assert_eq!(
            debug,
            "HttpRequest { method: \"POST\", origin: \"https://ec2.us-east-1.amazonaws.com\", \
             path_and_query: \"/\", headers: [\"x-amz-security-token\"], body_bytes: 22 }"
        );
    }
}
