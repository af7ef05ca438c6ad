//! The component's transport: one blocking request through `wasi:http/outgoing-handler`
//! (WASI 0.2). The host decides whether the origin may be reached at all; its refusal comes
//! back as an error code like any network failure and is reported as [`TransportErrorKind::Denied`].

use std::time::Duration;

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, HeaderError, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme as WasiScheme, http_error_code,
};
use wasi::io::streams::StreamError;

use super::{HttpRequest, HttpResponse, Scheme, Transport, TransportError, TransportErrorKind};

/// A response body larger than this is refused (a full DescribeVolumes page is ~1 MiB).
const MAX_RESPONSE_BYTES: usize = 32 << 20;
/// `blocking-write-and-flush` takes at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;
const READ_CHUNK: u64 = 64 << 10;
/// For connecting, for the first response byte and between bytes: EC2 answers in well
/// under a second, and a hung connection must not eat the call's wait budget.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct WasiHttp;

impl Transport for WasiHttp {
    fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let what = format!("{} {}", request.method, request.origin());
        exchange(request).map_err(|failure| failure.into_error(&what))
    }
}

/// Why an exchange failed, before it is described.
enum Failure {
    Code(ErrorCode),
    Header(String, HeaderError),
    /// A call the host refused without an error code (an unusable method, scheme, …).
    Refused(&'static str),
    Stream(String),
    TooLarge,
}

impl Failure {
    fn into_error(self, what: &str) -> TransportError {
        let (kind, reason) = match self {
            Failure::Code(code) => describe(&code),
            Failure::Header(name, error) => {
                (TransportErrorKind::Failed, format!("header {name:?} was refused ({error:?})"))
            }
            Failure::Refused(step) => (TransportErrorKind::Failed, format!("the host refused to {step}")),
            Failure::Stream(detail) => (TransportErrorKind::Failed, format!("the response broke off: {detail}")),
            Failure::TooLarge => {
                (TransportErrorKind::Failed, format!("the response is larger than {MAX_RESPONSE_BYTES} bytes"))
            }
        };
        TransportError { kind, detail: format!("{what}: {reason}") }
    }
}

fn describe(code: &ErrorCode) -> (TransportErrorKind, String) {
    use TransportErrorKind::{Denied, Failed, Timeout, Unreachable};
    match code {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
            (Denied, "the host denied the request: grant this origin to the backend instance".into())
        }
        ErrorCode::DnsTimeout
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => (Timeout, "timed out".into()),
        ErrorCode::ConnectionRefused => (Unreachable, "connection refused".into()),
        ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable => (Unreachable, "destination unreachable".into()),
        other => (Failed, format!("{other:?}")),
    }
}

fn exchange(request: HttpRequest) -> Result<HttpResponse, Failure> {
    let outgoing = OutgoingRequest::new(headers(&request.headers)?);
    let method = match request.method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        other => Method::Other(other.to_owned()),
    };
    outgoing.set_method(&method).map_err(|()| Failure::Refused("set the method"))?;
    let scheme = match request.scheme {
        Scheme::Http => WasiScheme::Http,
        Scheme::Https => WasiScheme::Https,
    };
    outgoing.set_scheme(Some(&scheme)).map_err(|()| Failure::Refused("set the scheme"))?;
    outgoing.set_authority(Some(&request.authority)).map_err(|()| Failure::Refused("set the authority"))?;
    outgoing.set_path_with_query(Some(&request.path_and_query)).map_err(|()| Failure::Refused("set the path"))?;
    let body = outgoing.body().map_err(|()| Failure::Refused("open the request body"))?;

    let future = outgoing_handler::handle(outgoing, Some(options())).map_err(Failure::Code)?;
    write_body(&body, &request.body)?;
    OutgoingBody::finish(body, None).map_err(Failure::Code)?;

    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(Failure::Code(code)),
        Some(Err(())) | None => return Err(Failure::Refused("hand over the response")),
    };
    let status = response.status();
    let incoming = response.consume().map_err(|()| Failure::Refused("open the response body"))?;
    let body = read_body(&incoming)?;
    // Trailers are not used; finishing releases the body.
    drop(IncomingBody::finish(incoming));
    Ok(HttpResponse { status, body })
}

fn headers(headers: &[(String, String)]) -> Result<Fields, Failure> {
    let fields = Fields::new();
    for (name, value) in headers {
        // A refused header is named, never its value.
        fields.append(name, value.as_bytes()).map_err(|error| Failure::Header(name.clone(), error))?;
    }
    Ok(fields)
}

/// [`TIMEOUT`] for each phase. A host that cannot apply one keeps its own default, which is
/// no reason to fail the request.
fn options() -> RequestOptions {
    let nanos = u64::try_from(TIMEOUT.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    options
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), Failure> {
    let stream = body.write().map_err(|()| Failure::Refused("write the request body"))?;
    for chunk in bytes.chunks(WRITE_CHUNK) {
        stream.blocking_write_and_flush(chunk).map_err(stream_failure)?;
    }
    Ok(())
}

fn read_body(body: &IncomingBody) -> Result<Vec<u8>, Failure> {
    let stream = body.stream().map_err(|()| Failure::Refused("read the response body"))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(Failure::TooLarge);
                }
                bytes.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(bytes),
            Err(error) => return Err(stream_failure(error)),
        }
    }
}

fn stream_failure(error: StreamError) -> Failure {
    match error {
        StreamError::LastOperationFailed(io) => match http_error_code(&io) {
            Some(code) => Failure::Code(code),
            None => Failure::Stream(io.to_debug_string()),
        },
        StreamError::Closed => Failure::Stream("closed early".into()),
    }
}
