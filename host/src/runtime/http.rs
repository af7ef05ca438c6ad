//! Outgoing HTTP for backends (`wasi:http/outgoing-handler`), allowed only to the origins
//! an instance is granted.
//!
//! Every request is checked before anything leaves the host: its `scheme://host:port` must
//! equal a granted origin, or it fails with `HTTP-request-denied` and no traffic. A granted
//! origin named by a host name must also resolve to public addresses only, so a name
//! pointed at loopback, a private range or the link-local metadata service is refused; an
//! operator who means such an address grants it as an IP literal. Requests and responses are
//! buffered (control-plane APIs are small; the response is capped by the instance's
//! `output_kib`) and bounded by the call's deadline, which the epoch interrupt cannot enforce
//! while the guest waits in the host. Nothing but the method and origin is logged: request
//! headers carry credentials.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

pub use wasmtime_wasi_http::RequestOptions;

/// Why an outgoing request failed, as the guest sees it (`wasi:http` error codes).
pub use wasmtime_wasi_http::Error as HttpError;

/// A buffered request or response.
pub type Request = http::Request<Bytes>;
pub type Response = http::Response<Bytes>;
pub type SendFuture = Pin<Box<dyn Future<Output = Result<Response, HttpError>> + Send>>;

/// Largest request body a backend may send.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Sends a request that passed the grant check: the network in production, a scripted
/// responder in tests.
pub trait HttpSender: Send + Sync {
    fn send(
        &self,
        origin: &Origin,
        request: Request,
        options: Option<RequestOptions>,
        max_response: usize,
    ) -> SendFuture;
}

/// `scheme://host:port`, as granted and as requests are compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    /// Lowercase host name, or an IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses a grant such as `https://ec2.eu-west-1.amazonaws.com` or `http://127.0.0.1:5000`.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let uri: http::Uri = text.parse().map_err(|e| format!("HTTP grant {text:?}: {e}"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("HTTP grant {text:?}: give only scheme://host[:port], no path"));
        }
        Origin::of(&uri).ok_or_else(|| format!("HTTP grant {text:?}: needs an http or https scheme and a host"))
    }

    /// The origin a request URI addresses.
    pub fn of(uri: &http::Uri) -> Option<Origin> {
        let https = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        (!host.is_empty()).then_some(Origin { https, host, port })
    }

    fn ip_literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        match self.ip_literal() {
            Some(IpAddr::V6(ip)) => write!(f, "{scheme}://[{ip}]:{}", self.port),
            _ => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

/// Addresses a host name must not resolve to: loopback, private, link-local (the cloud
/// metadata service), shared (CGNAT), unspecified, multicast and documentation ranges.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local())
            }
        },
    }
}

/// The production sender: checks where a host name resolves, then sends with wasmtime's
/// HTTP/1.1 client (rustls with the web PKI roots for https).
pub struct Network;

impl HttpSender for Network {
    fn send(
        &self,
        origin: &Origin,
        request: Request,
        options: Option<RequestOptions>,
        max_response: usize,
    ) -> SendFuture {
        let origin = origin.clone();
        Box::pin(async move {
            if origin.ip_literal().is_none() {
                let addresses = tokio::net::lookup_host((origin.host.as_str(), origin.port))
                    .await
                    .map_err(|_| HttpError::DestinationNotFound)?;
                let mut any = false;
                for address in addresses {
                    any = true;
                    if !is_public(address.ip()) {
                        tracing::warn!(%origin, address = %address.ip(), "denied: a granted host name resolves to a non-public address");
                        return Err(HttpError::DestinationIpProhibited);
                    }
                }
                if !any {
                    return Err(HttpError::DestinationNotFound);
                }
            }
            let request = request.map(|body| Full::new(body).map_err(|never| match never {}));
            let (response, connection) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let connection = tokio::spawn(connection);
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_response)
                .collect()
                .await
                .map_err(|_| HttpError::HttpResponseBodySize(Some(max_response as u64)))?
                .to_bytes();
            connection.abort();
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// The `wasi:http` hooks of one call: the grant check, the deadline and the sender.
pub struct GrantedHttp {
    pub backend: Arc<str>,
    pub origins: Arc<[Origin]>,
    pub sender: Arc<dyn HttpSender>,
    pub deadline: Instant,
    pub max_response: usize,
}

type Finished = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for GrantedHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Finished,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Finished), HttpError>> + Send> {
        drop(fut);
        let backend = self.backend.clone();
        let origin = Origin::of(request.uri());
        let granted = origin.as_ref().filter(|o| self.origins.contains(o)).cloned();
        let (sender, deadline, max_response) = (self.sender.clone(), self.deadline, self.max_response);
        let method = request.method().clone();
        Box::new(async move {
            let (parts, body) = request.into_parts();
            // Read the body even when the request is denied: the guest is still writing it,
            // and should learn of the denial from the response, not from a closed stream.
            let body = Limited::new(body, MAX_REQUEST_BYTES).collect().await;
            let Some(origin) = granted else {
                let target = origin.map_or_else(|| "a URI without an http(s) origin".to_string(), |o| o.to_string());
                tracing::warn!(%backend, %method, %target, "denied: outgoing HTTP to an origin not granted");
                return Err(HttpError::HttpRequestDenied);
            };
            tracing::debug!(%backend, %method, %origin, "outgoing HTTP");
            let body = body.map_err(|_| HttpError::HttpRequestBodySize(None))?.to_bytes();
            let send = sender.send(&origin, Request::from_parts(parts, body), options, max_response);
            let response =
                tokio::time::timeout_at(deadline.into(), send).await.map_err(|_| HttpError::ConnectionTimeout)??;
            let response = response.map(|body| Full::new(body).map_err(|never| match never {}).boxed_unsync());
            Ok((response, Box::new(async { Ok(()) }) as Finished))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_to_origins_with_default_ports() {
        assert_eq!(
            Origin::parse("https://EC2.us-east-1.amazonaws.com").unwrap().to_string(),
            "https://ec2.us-east-1.amazonaws.com:443"
        );
        assert_eq!(Origin::parse("http://127.0.0.1:5000/").unwrap().to_string(), "http://127.0.0.1:5000");
        assert_eq!(Origin::parse("http://[::1]:8080").unwrap().to_string(), "http://[::1]:8080");
        for bad in ["ftp://x", "https://x/path", "x.example.com", "https://u:p@x", "https://x?q=1"] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_origins_compare_scheme_host_and_port() {
        let granted = Origin::parse("http://127.0.0.1:5000").unwrap();
        let of = |uri: &str| Origin::of(&uri.parse().unwrap());
        assert_eq!(of("http://127.0.0.1:5000/?Action=DescribeVolumes"), Some(granted.clone()));
        for other in
            ["https://127.0.0.1:5000/", "http://127.0.0.1:5001/", "http://127.0.0.2:5000/", "http://localhost:5000/"]
        {
            assert_ne!(of(other), Some(granted.clone()), "{other}");
        }
    }

    #[test]
    fn non_public_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["52.94.1.1", "8.8.8.8", "2600:1f18::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
