//! Outgoing HTTP for backends (`wasi:http/outgoing-handler`), allowed only to the origins
//! an instance is granted.
//!
//! Every request is checked before anything leaves the host: its `scheme://host:port` must
//! equal a granted origin, or it fails with `HTTP-request-denied` and no traffic. A granted
//! origin named by a host name must also resolve to public addresses only, so a name
//! pointed at loopback, a private range or the link-local metadata service is refused; an
//! operator who means such an address grants it as an IP literal. The connection then goes to
//! exactly the addresses that were checked (`Network`), never to a second resolution. Requests and responses are
//! buffered (control-plane APIs are small; the response is capped by the instance's
//! `output_kib`) and bounded by the call's deadline, which the epoch interrupt cannot enforce
//! while the guest waits in the host. Nothing but the method and origin is logged: request
//! headers carry credentials.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};
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
/// metadata service), shared (CGNAT), unspecified, multicast, documentation, benchmarking
/// and reserved ranges, and IPv6 addresses that carry one of those IPv4 addresses (mapped,
/// compatible, NAT64, 6to4) or are Teredo, site-local or discard-only.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
                || a == 0)
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let embedded = |high: u16, low: u16| std::net::Ipv4Addr::from(((high as u32) << 16) | low as u32);
            let carried = match segments {
                [0, 0, 0, 0, 0, 0xffff, h, l] | [0, 0, 0, 0, 0, 0, h, l] => Some(embedded(h, l)),
                [0x64, 0xff9b, 0, 0, 0, 0, h, l] => Some(embedded(h, l)),
                [0x2002, h, l, ..] => Some(embedded(h, l)),
                _ => None,
            };
            match carried {
                Some(v4) => !v6.is_loopback() && !v6.is_unspecified() && is_public(IpAddr::V4(v4)),
                None => {
                    !(v6.is_multicast()
                        || v6.is_unique_local()
                        || v6.is_unicast_link_local()
                        || (segments[0] & 0xffc0) == 0xfec0
                        || (segments[0] == 0x2001 && segments[1] == 0)
                        || (segments[0] == 0x2001 && segments[1] == 0xdb8)
                        || segments[..4] == [0x100, 0, 0, 0])
                }
            }
        }
    }
}

/// Where a granted host name points: the system resolver in production, a script in tests.
pub trait Resolve: Send + Sync {
    fn resolve(&self, host: &str, port: u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;
}

/// The system resolver (`getaddrinfo` on a blocking thread, through tokio).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
    }
}

/// The production sender. A granted host name is resolved once, every address it resolves
/// to must be public, and the connection goes to exactly those addresses: the name is never
/// resolved again, so a name that rebinds between check and connect (to loopback or the
/// metadata service) cannot move the connection. TCP to the checked address, TLS (web PKI
/// roots, the granted host name as SNI and certificate name) for https, then one HTTP/1.1
/// request on that connection.
#[derive(Clone)]
pub struct Network {
    resolver: Arc<dyn Resolve>,
    tls: tokio_rustls::TlsConnector,
}

impl Network {
    pub fn new() -> Network {
        Network::with_resolver(Arc::new(SystemResolver))
    }

    pub fn with_resolver(resolver: Arc<dyn Resolve>) -> Network {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Network { resolver, tls: tokio_rustls::TlsConnector::from(Arc::new(config)) }
    }

    /// The addresses to connect to: the IP literal, or every address the name resolves to,
    /// once, when all of them are public.
    async fn addresses(&self, origin: &Origin) -> Result<Vec<SocketAddr>, HttpError> {
        if let Some(ip) = origin.ip_literal() {
            return Ok(vec![SocketAddr::new(ip, origin.port)]);
        }
        let addresses =
            self.resolver.resolve(&origin.host, origin.port).await.map_err(|_| HttpError::DestinationNotFound)?;
        if addresses.is_empty() {
            return Err(HttpError::DestinationNotFound);
        }
        if let Some(address) = addresses.iter().find(|a| !is_public(a.ip())) {
            tracing::warn!(%origin, address = %address.ip(), "denied: a granted host name resolves to a non-public address");
            return Err(HttpError::DestinationIpProhibited);
        }
        Ok(addresses)
    }

    /// A TCP connection to the first of `addresses` that accepts.
    async fn connect(addresses: &[SocketAddr], timeout: Duration) -> Result<TcpStream, HttpError> {
        let mut last = HttpError::ConnectionRefused;
        for address in addresses {
            match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = HttpError::Connect(e),
                Err(_) => last = HttpError::ConnectionTimeout,
            }
        }
        Err(last)
    }

    async fn exchange(
        &self,
        origin: Origin,
        request: Request,
        options: Option<RequestOptions>,
        max_response: usize,
    ) -> Result<Response, HttpError> {
        let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(Duration::MAX);
        let first_byte_timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(Duration::MAX);
        let addresses = self.addresses(&origin).await?;
        let tcp = Self::connect(&addresses, connect_timeout).await?;
        let (mut sender, connection) = if origin.https {
            let name = match origin.ip_literal() {
                Some(ip) => ServerName::from(ip),
                None => ServerName::try_from(origin.host.clone()).map_err(|_| HttpError::HttpRequestUriInvalid)?,
            };
            let tls = tokio::time::timeout(connect_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| HttpError::ConnectionTimeout)?
                .map_err(HttpError::Tls)?;
            handshake(Box::new(tls), connect_timeout).await?
        } else {
            handshake(Box::new(tcp), connect_timeout).await?
        };
        let connection = tokio::spawn(connection);
        // The origin was checked; the request line carries only the path (HTTP/1.1 to an
        // origin server), the Host header the guest's authority.
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = http::Uri::builder().path_and_query(path).build().map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let answer = async {
            let response = tokio::time::timeout(
                first_byte_timeout,
                sender.send_request(http::Request::from_parts(parts, Full::new(body))),
            )
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)??;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_response)
                .collect()
                .await
                .map_err(|_| HttpError::HttpResponseBodySize(Some(max_response as u64)))?
                .to_bytes();
            Ok(Response::from_parts(parts, body))
        }
        .await;
        connection.abort();
        answer
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::new()
    }
}

/// Any stream hyper can speak HTTP/1.1 over (plain TCP or TLS).
trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

type Connection = hyper::client::conn::http1::Connection<TokioIo<Box<dyn Stream>>, Full<Bytes>>;

async fn handshake(
    stream: Box<dyn Stream>,
    timeout: Duration,
) -> Result<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, Connection), HttpError> {
    tokio::time::timeout(timeout, hyper::client::conn::http1::handshake(TokioIo::new(stream)))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::from)
}

impl HttpSender for Network {
    fn send(
        &self,
        origin: &Origin,
        request: Request,
        options: Option<RequestOptions>,
        max_response: usize,
    ) -> SendFuture {
        let network = self.clone();
        let origin = origin.clone();
        Box::pin(async move { network.exchange(origin, request, options, max_response).await })
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
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        for hidden in [
            "240.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.0.8",
            "::a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:0101::",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "fec0::1",
            "100::1",
        ] {
            assert!(!is_public(hidden.parse().unwrap()), "{hidden}");
        }
        for public in ["52.94.1.1", "8.8.8.8", "2600:1f18::1", "64:ff9b::808:808", "2002:808:808::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    /// A loopback HTTP server: counts connections, keeps each request head, answers `body`.
    struct Server {
        port: u16,
        connections: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
    }

    async fn server(body: &'static [u8]) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connections, heads) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (count, seen) = (connections.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                    let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let _ = stream.write_all(&[answer.as_bytes(), body].concat()).await;
                });
            }
        });
        Server { port, connections, heads }
    }

    /// Answers `first` on the first lookup and 127.0.0.1 on every later one.
    struct Rebinding {
        first: IpAddr,
        lookups: AtomicUsize,
    }

    impl Resolve for Rebinding {
        fn resolve(&self, _: &str, port: u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
            let ip = if self.lookups.fetch_add(1, Ordering::SeqCst) == 0 { self.first } else { [127, 0, 0, 1].into() };
            Box::pin(std::future::ready(Ok(vec![SocketAddr::new(ip, port)])))
        }
    }

    fn get(uri: &str) -> Request {
        http::Request::get(uri).header(http::header::HOST, "rebind.test").body(Bytes::new()).unwrap()
    }

    fn short_connect() -> Option<RequestOptions> {
        Some(RequestOptions { connect_timeout: Some(Duration::from_millis(500)), ..Default::default() })
    }

    #[tokio::test]
    async fn a_rebinding_name_never_reaches_loopback() {
        let server = server(b"secret").await;
        let origin = Origin::parse(&format!("http://rebind.test:{}", server.port)).unwrap();
        // Checked public, then (were the name resolved again to connect) loopback.
        let resolver = Arc::new(Rebinding { first: "2600:1f18::1".parse().unwrap(), lookups: AtomicUsize::new(0) });
        let network = Network::with_resolver(resolver.clone());
        let uri = format!("http://rebind.test:{}/", server.port);
        let answer = network.send(&origin, get(&uri), short_connect(), 1024).await;
        assert!(
            matches!(answer, Err(HttpError::Connect(_) | HttpError::ConnectionTimeout | HttpError::ConnectionRefused)),
            "only the checked (public, unreachable here) address is tried: {answer:?}"
        );
        for _ in 0..2 {
            let answer = network.send(&origin, get(&uri), short_connect(), 1024).await;
            assert!(matches!(answer, Err(HttpError::DestinationIpProhibited)), "{answer:?}");
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 0, "the loopback server was never connected to");
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 3, "one lookup per request, none to connect");

        // A name that resolves to loopback right away is refused before any connection.
        let resolver = Arc::new(Rebinding { first: [127, 0, 0, 1].into(), lookups: AtomicUsize::new(0) });
        let answer = Network::with_resolver(resolver).send(&origin, get("http://rebind.test/"), None, 1024).await;
        assert!(matches!(answer, Err(HttpError::DestinationIpProhibited)), "{answer:?}");
        assert_eq!(server.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_granted_ip_literal_is_reached_with_an_origin_form_request_and_a_capped_response() {
        let server = server(b"hello").await;
        let origin = Origin::parse(&format!("http://127.0.0.1:{}", server.port)).unwrap();
        let uri = format!("http://127.0.0.1:{}/path?Action=X", server.port);
        let response = Network::new().send(&origin, get(&uri), None, 1024).await.unwrap();
        assert_eq!((response.status(), response.body().as_ref()), (http::StatusCode::OK, &b"hello"[..]));
        let head = server.heads.lock().unwrap()[0].clone();
        assert!(head.starts_with("GET /path?Action=X HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("host: rebind.test\r\n"), "{head}");

        let answer = Network::new().send(&origin, get(&uri), None, 4).await;
        assert!(matches!(answer, Err(HttpError::HttpResponseBodySize(Some(4)))), "{answer:?}");
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    }
}
