//! A fake EC2: a small in-memory state machine that checks every request's SigV4
//! signature, parses the form body, and answers with the response shapes EC2 uses
//! (namespaced XML, `<Response><Errors>` documents).
//!
//! The unit tests reach it through the [`Transport`] trait; with the crate feature `fake`
//! it is public, and [`FakeEc2::serve`] answers a request as an HTTP server would, so the
//! testkit's fake HTTP can put it behind the real component in wasmtime.
//!
//! Changes take scripted time: a volume stays `creating`, an attachment `attaching` or
//! `detaching`, a modification `modifying`, a snapshot `pending` for a set number of
//! Describe calls that show it. Failures (throttling, 5xx, timeouts, any error document)
//! can be queued per action. Every request is recorded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use crate::clock;
use crate::credentials::Credentials;
use crate::query::percent_decode;
use crate::sigv4::{self, Scope};
use crate::transport::{HttpRequest, HttpResponse, Scheme, Transport, TransportError, TransportErrorKind};

pub use crate::context::fake::{ACCESS_KEY_ID, NODE_ID, SECRET_ACCESS_KEY, SESSION_TOKEN};

pub const ZONE: &str = "us-east-1a";
pub const OTHER_ZONE: &str = "us-east-1b";
/// The region the fake signs in (the zones' region).
pub const REGION: &str = "us-east-1";
/// An instance in [`ZONE`] besides the platform's node.
pub const OTHER_NODE: &str = "i-0fedcba9876543210";
/// An instance in [`OTHER_ZONE`].
pub const FAR_NODE: &str = "i-0aaaaaaaaaaaaaaa1";
/// The private DNS name of [`NODE_ID`] (a Kubernetes node name on EC2).
pub const NODE_DNS_NAME: &str = "ip-10-0-1-17.ec2.internal";
const ZONES: [&str; 3] = [ZONE, OTHER_ZONE, "us-east-1c"];
const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";
/// EC2's bounds on `MaxResults`.
const MAX_RESULTS: std::ops::RangeInclusive<usize> = 5..=1000;

/// Fails the test if `text` holds any of the fake credentials.
pub fn assert_no_credentials(text: &str) {
    for secret in [ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN] {
        assert!(!text.contains(secret), "a credential leaked into: {text}");
    }
}

#[cfg(test)]
pub use fixture::{Fixture, ctx_with};

#[cfg(test)]
mod fixture {
    use super::{FakeEc2, assert_no_credentials};
    use crate::context::Ctx;
    use crate::context::fake::FakePlatform;
    use crate::settings::Settings;

    /// A context for one call against `ec2`.
    pub fn ctx_with<'p>(platform: &'p FakePlatform, ec2: &'p FakeEc2, settings: Settings) -> Ctx<'p> {
        Ctx::new(settings, platform, ec2)
    }

    /// A platform and a fake EC2; each [`Fixture::ctx`] is a fresh call.
    pub struct Fixture {
        pub platform: FakePlatform,
        pub ec2: FakeEc2,
    }

    impl Default for Fixture {
        fn default() -> Fixture {
            Fixture::new()
        }
    }

    impl Fixture {
        pub fn new() -> Fixture {
            Fixture { platform: FakePlatform::new(), ec2: FakeEc2::new() }
        }

        pub fn ctx(&self) -> Ctx<'_> {
            ctx_with(&self.platform, &self.ec2, Settings::for_tests())
        }

        /// Checks an error a test produced: no credential in it, then hands it back.
        pub fn checked<T: std::fmt::Debug>(&self, result: Result<T, kit::types::Error>) -> kit::types::Error {
            let error = result.expect_err("expected an error");
            assert_no_credentials(&format!("{error:?}"));
            for log in self.platform.logs.borrow().iter() {
                assert_no_credentials(log);
            }
            error
        }
    }
}

/// A request [`FakeEc2::serve`] let time out: no answer reaches the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut;

/// What a queued response does instead of the normal answer.
#[derive(Clone, Debug)]
pub enum Scripted {
    /// An EC2 error document with this status, code and message.
    Error(u16, &'static str, String),
    /// The transport times out before the request arrives.
    Timeout,
    /// EC2 handles the request, then the transport times out before the answer arrives.
    LostAnswer,
    /// This status and body, verbatim.
    Raw(u16, &'static str),
}

impl Scripted {
    pub fn throttle() -> Scripted {
        Scripted::Error(503, "RequestLimitExceeded", "Request limit exceeded.".into())
    }

    pub fn server_error() -> Scripted {
        Scripted::Error(500, "InternalError", "An internal error has occurred.".into())
    }
}

/// How many Describe calls each change stays pending for.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delays {
    pub creating: u32,
    pub attaching: u32,
    pub detaching: u32,
    pub modifying: u32,
    pub snapshot: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeVolume {
    pub id: String,
    pub size: u64,
    pub zone: String,
    pub volume_type: String,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub snapshot: Option<String>,
    pub state: String,
    pub tags: Vec<(String, String)>,
    pub attachments: Vec<FakeAttachment>,
    pub modification: Option<FakeModification>,
    pending: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeAttachment {
    pub instance: String,
    pub device: String,
    pub state: String,
    pending: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeModification {
    pub state: String,
    pub size: u64,
    pub volume_type: String,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    pending: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeSnapshot {
    pub id: String,
    pub volume: String,
    pub size: u64,
    pub state: String,
    pub tags: Vec<(String, String)>,
    pending: u32,
}

struct State {
    volumes: BTreeMap<String, FakeVolume>,
    snapshots: BTreeMap<String, FakeSnapshot>,
    /// Instance id → (zone, device names in use besides attachments).
    instances: BTreeMap<String, (String, Vec<String>)>,
    /// ClientToken → (volume id, the parameters it was created with).
    client_tokens: BTreeMap<String, (String, String)>,
    delays: Delays,
    script: BTreeMap<String, VecDeque<Scripted>>,
    /// What requests must be signed with.
    credentials: Credentials,
    /// Instance id → private DNS name.
    dns_names: BTreeMap<String, String>,
    requests: Vec<HttpRequest>,
    bad_signatures: usize,
    next_id: u64,
}

pub struct FakeEc2 {
    state: Mutex<State>,
}

impl Default for FakeEc2 {
    fn default() -> FakeEc2 {
        FakeEc2::new()
    }
}

type Form = BTreeMap<String, String>;
type Answer = Result<String, (u16, &'static str, String)>;

impl FakeEc2 {
    /// No volumes or snapshots; [`NODE_ID`] (named [`NODE_DNS_NAME`]) and [`OTHER_NODE`] in
    /// [`ZONE`] (each with its root device `/dev/xvda`), [`FAR_NODE`] in [`OTHER_ZONE`]; no
    /// delays; requests signed with [`ACCESS_KEY_ID`], [`SECRET_ACCESS_KEY`] and
    /// [`SESSION_TOKEN`] in [`REGION`].
    pub fn new() -> FakeEc2 {
        let root = || vec!["/dev/xvda".to_owned()];
        let instances = [(NODE_ID, ZONE), (OTHER_NODE, ZONE), (FAR_NODE, OTHER_ZONE)]
            .iter()
            .map(|(id, zone)| (id.to_string(), (zone.to_string(), root())))
            .collect();
        FakeEc2 {
            state: Mutex::new(State {
                volumes: BTreeMap::new(),
                snapshots: BTreeMap::new(),
                instances,
                client_tokens: BTreeMap::new(),
                delays: Delays::default(),
                script: BTreeMap::new(),
                credentials: Credentials {
                    access_key_id: ACCESS_KEY_ID.into(),
                    secret_access_key: SECRET_ACCESS_KEY.into(),
                    session_token: Some(SESSION_TOKEN.into()),
                },
                dns_names: BTreeMap::from([(NODE_ID.to_owned(), NODE_DNS_NAME.to_owned())]),
                requests: Vec::new(),
                bad_signatures: 0,
                next_id: 1,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; the state is
        // still what it was.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Requests must be signed with these (no session token: none may be sent).
    pub fn expect_credentials(&self, access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) {
        self.lock().credentials = Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: session_token.map(str::to_owned),
        };
    }

    /// Adds an instance in `zone`, and the private DNS name it answers to when given.
    pub fn add_instance(&self, id: &str, zone: &str, dns_name: Option<&str>) {
        let mut state = self.lock();
        state.instances.insert(id.to_owned(), (zone.to_owned(), vec!["/dev/xvda".to_owned()]));
        if let Some(name) = dns_name {
            state.dns_names.insert(id.to_owned(), name.to_owned());
        }
    }

    /// Answers one HTTP request as EC2 would, given what arrived: the method, the full URI
    /// (`http://host:port/path`), the headers (a `host` header, if any, wins over the
    /// URI's authority) and the body. Scripted timeouts are [`TimedOut`].
    pub fn serve(
        &self,
        method: &str,
        uri: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), TimedOut> {
        let (scheme, rest) = match uri.split_once("://") {
            Some(("https", rest)) => (Scheme::Https, rest),
            Some((_, rest)) => (Scheme::Http, rest),
            None => (Scheme::Http, uri),
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let host = headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("host")).map(|(_, value)| value.clone());
        let request = HttpRequest {
            method: match method {
                "POST" => "POST",
                "GET" => "GET",
                _ => "OTHER",
            },
            scheme,
            authority: host.unwrap_or_else(|| authority.to_owned()),
            path_and_query: path.to_owned(),
            headers: headers.iter().filter(|(name, _)| !name.eq_ignore_ascii_case("host")).cloned().collect(),
            body: body.to_vec(),
        };
        match self.send(request) {
            Ok(response) => Ok((response.status, response.body)),
            Err(_) => Err(TimedOut),
        }
    }

    pub fn set_delays(&self, delays: Delays) {
        self.lock().delays = delays;
    }

    /// Queues `response` for the next request of `action` (`*`: of any action).
    pub fn script(&self, action: &str, response: Scripted) {
        self.lock().script.entry(action.to_owned()).or_default().push_back(response);
    }

    /// Queues a verbatim answer to the next request.
    pub fn script_raw(&self, status: u16, body: &'static str) {
        self.script("*", Scripted::Raw(status, body));
    }

    /// Marks device names as used on an instance.
    pub fn use_devices(&self, instance: &str, devices: impl IntoIterator<Item = String>) {
        let mut state = self.lock();
        if let Some((_, used)) = state.instances.get_mut(instance) {
            used.extend(devices);
        }
    }

    /// Adds a volume as if made outside this backend (available, untagged unless given).
    pub fn add_volume(&self, size: u64, zone: &str, tags: &[(&str, &str)]) -> String {
        let mut state = self.lock();
        let id = state.new_id("vol");
        let volume = FakeVolume {
            id: id.clone(),
            size,
            zone: zone.into(),
            volume_type: "gp3".into(),
            iops: Some(3000),
            throughput: Some(125),
            encrypted: false,
            kms_key_id: None,
            snapshot: None,
            state: "available".into(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            attachments: Vec::new(),
            modification: None,
            pending: 0,
        };
        state.volumes.insert(id.clone(), volume);
        id
    }

    /// Adds a completed snapshot of `volume` (which need not exist).
    pub fn add_snapshot(&self, volume: &str, size: u64, tags: &[(&str, &str)]) -> String {
        let mut state = self.lock();
        let id = state.new_id("snap");
        let snapshot = FakeSnapshot {
            id: id.clone(),
            volume: volume.into(),
            size,
            state: "completed".into(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            pending: 0,
        };
        state.snapshots.insert(id.clone(), snapshot);
        id
    }

    pub fn volume(&self, id: &str) -> Option<FakeVolume> {
        self.lock().volumes.get(id).cloned()
    }

    pub fn volumes(&self) -> Vec<FakeVolume> {
        self.lock().volumes.values().cloned().collect()
    }

    pub fn snapshots(&self) -> Vec<FakeSnapshot> {
        self.lock().snapshots.values().cloned().collect()
    }

    /// Changes a volume in place (a state, an attachment made elsewhere, …).
    pub fn edit_volume(&self, id: &str, edit: impl FnOnce(&mut FakeVolume)) {
        if let Some(volume) = self.lock().volumes.get_mut(id) {
            edit(volume);
        }
    }

    /// An attachment already in `state`, made outside this backend.
    pub fn attach_outside(&self, volume: &str, instance: &str, device: &str, state: &str) {
        self.edit_volume(volume, |v| {
            v.state = "in-use".into();
            v.attachments.push(FakeAttachment {
                instance: instance.into(),
                device: device.into(),
                state: state.into(),
                pending: 0,
            });
        });
    }

    pub(crate) fn requests(&self) -> Vec<HttpRequest> {
        self.lock().requests.clone()
    }

    /// The actions and form parameters of every request, in order.
    pub fn calls(&self) -> Vec<(String, Form)> {
        self.requests()
            .iter()
            .map(|request| {
                let form = parse_form(&String::from_utf8_lossy(&request.body));
                (form.get("Action").cloned().unwrap_or_default(), form)
            })
            .collect()
    }

    /// The actions of every request, in order.
    pub fn actions(&self) -> Vec<String> {
        self.calls().into_iter().map(|(action, _)| action).collect()
    }

    pub fn count(&self, action: &str) -> usize {
        self.actions().iter().filter(|a| *a == action).count()
    }

    /// The form of the last request of `action`.
    pub fn last(&self, action: &str) -> Form {
        self.calls()
            .into_iter()
            .rev()
            .find(|(a, _)| a == action)
            .map(|(_, form)| form)
            .unwrap_or_else(|| panic!("no {action} was sent"))
    }

    pub fn bad_signatures(&self) -> usize {
        self.lock().bad_signatures
    }
}

impl Transport for FakeEc2 {
    fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut state = self.lock();
        state.requests.push(request.clone());
        let form = parse_form(&String::from_utf8_lossy(&request.body));
        let action = form.get("Action").cloned().unwrap_or_default();
        let scripted =
            [action.as_str(), "*"].iter().find_map(|key| state.script.get_mut(*key).and_then(VecDeque::pop_front));
        let answer = match scripted {
            Some(lost @ (Scripted::Timeout | Scripted::LostAnswer)) => {
                if matches!(lost, Scripted::LostAnswer) {
                    drop(state.handle(&action, &form));
                }
                return Err(TransportError {
                    kind: TransportErrorKind::Timeout,
                    detail: format!("POST {}: timed out", request.origin()),
                });
            }
            Some(Scripted::Raw(status, body)) => {
                return Ok(HttpResponse { status, body: body.as_bytes().to_vec() });
            }
            Some(Scripted::Error(status, code, message)) => Err((status, code, message)),
            None => match check_signature(&request, &state.credentials) {
                Err(error) => {
                    state.bad_signatures += 1;
                    Err(error)
                }
                Ok(()) => state.handle(&action, &form),
            },
        };
        Ok(match answer {
            Ok(inner) => HttpResponse {
                status: 200,
                body: format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{NAMESPACE}\">\
                     <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>{inner}</{action}Response>"
                )
                .into_bytes(),
            },
            Err((status, code, message)) => HttpResponse {
                status,
                body: format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
                     <Message>{}</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>",
                    escape(&message)
                )
                .into_bytes(),
            },
        })
    }
}

/// Checks the request as EC2 would: the right key, scope and token, and a signature made
/// with the expected secret over the headers it names (`SignedHeaders`, `host` being the
/// request's authority), the method, the path and the body.
fn check_signature(request: &HttpRequest, credentials: &Credentials) -> Result<(), (u16, &'static str, String)> {
    let header = |name: &str| {
        request.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    let authorization = header("authorization");
    let amz_date = header("x-amz-date");
    let date = amz_date.get(..8).unwrap_or_default();
    let expected_credential = format!("Credential={}/{date}/{REGION}/ec2/aws4_request,", credentials.access_key_id);
    if !authorization.contains(&expected_credential) {
        return Err((401, "AuthFailure", "AWS was not able to validate the provided access credentials".into()));
    }
    if header("x-amz-security-token") != credentials.session_token.clone().unwrap_or_default() {
        return Err((403, "InvalidClientTokenId", "The security token included in the request is invalid.".into()));
    }
    let iso = amz_date
        .get(..15)
        .filter(|d| d.is_ascii())
        .map(|d| format!("{}-{}-{}T{}:{}:{}Z", &d[..4], &d[4..6], &d[6..8], &d[9..11], &d[11..13], &d[13..15]))
        .unwrap_or_default();
    let signed_at = UNIX_EPOCH + Duration::from_secs(clock::parse_iso8601(&iso).unwrap_or_default());
    let signed_headers: Vec<String> = authorization
        .split(", ")
        .find_map(|part| part.strip_prefix("SignedHeaders="))
        .unwrap_or_default()
        .split(';')
        .map(str::to_owned)
        .collect();
    let mut expected = request.clone();
    expected.headers.retain(|(name, _)| signed_headers.contains(&name.to_ascii_lowercase()));
    let scope = Scope { region: REGION, service: "ec2" };
    sigv4::sign(&mut expected, credentials, &scope, signed_at);
    let expected_authorization =
        expected.headers.iter().find(|(n, _)| n == "authorization").map(|(_, v)| v.clone()).unwrap_or_default();
    if authorization != expected_authorization {
        return Err((
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method."
                .into(),
        ));
    }
    Ok(())
}

impl State {
    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", 0x0abc_0000_0000_0000_u64 + self.next_id)
    }

    fn handle(&mut self, action: &str, form: &Form) -> Answer {
        match action {
            "CreateVolume" => self.create_volume(form),
            "DescribeVolumes" => self.describe_volumes(form),
            "DeleteVolume" => self.delete_volume(form),
            "AttachVolume" => self.attach_volume(form),
            "DetachVolume" => self.detach_volume(form),
            "DescribeInstances" => self.describe_instances(form),
            "ModifyVolume" => self.modify_volume(form),
            "DescribeVolumesModifications" => self.describe_modifications(form),
            "CreateSnapshot" => self.create_snapshot(form),
            "DescribeSnapshots" => self.describe_snapshots(form),
            "DeleteSnapshot" => self.delete_snapshot(form),
            other => Err((400, "InvalidAction", format!("The action {other} is not valid for this web service."))),
        }
    }

    fn create_volume(&mut self, form: &Form) -> Answer {
        let zone = required(form, "AvailabilityZone")?;
        let size: u64 = number(form, "Size")?.ok_or_else(|| missing("Size"))?;
        let volume_type = form.get("VolumeType").cloned().unwrap_or_else(|| "gp2".into());
        let snapshot = form.get("SnapshotId").cloned();
        let fingerprint = format!("{zone}/{size}/{volume_type}/{snapshot:?}");
        if let Some(token) = form.get("ClientToken") {
            if token.len() > 64 {
                return Err(invalid("ClientToken", token));
            }
            if let Some((id, seen)) = self.client_tokens.get(token) {
                if *seen != fingerprint {
                    return Err((
                        400,
                        "IdempotentParameterMismatch",
                        "The client token you have provided is associated with a resource that is already deleted \
                         or has different parameters."
                            .into(),
                    ));
                }
                let volume = self.volumes.get(id).ok_or_else(|| not_found_volume(id))?;
                return Ok(volume_fields(volume));
            }
        }
        if !ZONES.contains(&zone.as_str()) {
            return Err((400, "InvalidZone.NotFound", format!("The zone '{zone}' does not exist.")));
        }
        if let Some(snapshot_id) = &snapshot {
            let source = self.snapshots.get(snapshot_id).ok_or_else(|| {
                (400, "InvalidSnapshot.NotFound", format!("The snapshot '{snapshot_id}' does not exist."))
            })?;
            if size < source.size {
                return Err(invalid("Size", &size.to_string()));
            }
        }
        let id = self.new_id("vol");
        if let Some(token) = form.get("ClientToken") {
            self.client_tokens.insert(token.clone(), (id.clone(), fingerprint));
        }
        let volume = FakeVolume {
            id: id.clone(),
            size,
            zone,
            iops: number(form, "Iops")?.or((volume_type == "gp3").then_some(3000)),
            throughput: number(form, "Throughput")?.or((volume_type == "gp3").then_some(125)),
            volume_type,
            encrypted: form.get("Encrypted").is_some_and(|e| e == "true"),
            kms_key_id: form.get("KmsKeyId").cloned(),
            snapshot,
            state: "creating".into(),
            tags: tags(form, "volume"),
            attachments: Vec::new(),
            modification: None,
            pending: self.delays.creating,
        };
        let answer = volume_fields(&volume);
        self.volumes.insert(id, volume);
        Ok(answer)
    }

    fn describe_volumes(&mut self, form: &Form) -> Answer {
        let ids = list(form, "VolumeId");
        let filters = filters(form);
        if let Some(missing) = ids.iter().find(|id| !self.volumes.contains_key(*id)) {
            return Err(not_found_volume(missing));
        }
        if !ids.is_empty() && form.contains_key("MaxResults") {
            return Err((
                400,
                "InvalidParameterCombination",
                "The parameter volumesSet cannot be used with the parameter maxResults".into(),
            ));
        }
        let matching: Vec<String> = self
            .volumes
            .values()
            .filter(|v| ids.is_empty() || ids.contains(&v.id))
            .filter(|v| {
                filters.iter().all(|(name, values)| match name.as_str() {
                    "tag-key" => v.tags.iter().any(|(k, _)| values.contains(k)),
                    "attachment.instance-id" => v.attachments.iter().any(|a| values.contains(&a.instance)),
                    tag => tag
                        .strip_prefix("tag:")
                        .is_some_and(|key| v.tags.iter().any(|(k, val)| k == key && values.contains(val))),
                })
            })
            .map(|v| v.id.clone())
            .collect();
        let (page, next) = page(form, &matching)?;
        let mut items = String::new();
        for id in page {
            if let Some(volume) = self.volumes.get_mut(&id) {
                volume.tick();
                items.push_str(&format!("<item>{}</item>", volume_fields(volume)));
            }
        }
        Ok(format!("<volumeSet>{items}</volumeSet>{next}"))
    }

    fn delete_volume(&mut self, form: &Form) -> Answer {
        let id = required(form, "VolumeId")?;
        let volume = self.volumes.get(&id).ok_or_else(|| not_found_volume(&id))?;
        if !volume.attachments.is_empty() {
            return Err((
                400,
                "VolumeInUse",
                format!("Volume {id} is currently attached to {}", volume.attachments[0].instance),
            ));
        }
        self.volumes.remove(&id);
        Ok("<return>true</return>".into())
    }

    fn attach_volume(&mut self, form: &Form) -> Answer {
        let id = required(form, "VolumeId")?;
        let instance = required(form, "InstanceId")?;
        let device = required(form, "Device")?;
        let (instance_zone, used) =
            self.instances.get(&instance).cloned().ok_or_else(|| not_found_instance(&instance))?;
        let in_use = used.contains(&device) || self.attached_devices(&instance).contains(&device);
        let delay = self.delays.attaching;
        let volume = self.volumes.get_mut(&id).ok_or_else(|| not_found_volume(&id))?;
        if volume.zone != instance_zone {
            return Err((
                400,
                "InvalidVolume.ZoneMismatch",
                format!("The volume '{id}' is not in the same availability zone as instance '{instance}'"),
            ));
        }
        if let Some(other) = volume.attachments.first() {
            return Err((400, "VolumeInUse", format!("{id} is already attached to an instance {}", other.instance)));
        }
        if volume.state != "available" {
            return Err((400, "IncorrectState", format!("The volume '{id}' is not 'available'.")));
        }
        if in_use {
            return Err((
                400,
                "InvalidParameterValue",
                format!("Invalid value '{device}' for unixDevice. Attachment point {device} is already in use"),
            ));
        }
        volume.state = "in-use".into();
        volume.attachments.push(FakeAttachment {
            instance: instance.clone(),
            device: device.clone(),
            state: "attaching".into(),
            pending: delay,
        });
        Ok(format!(
            "<volumeId>{id}</volumeId><instanceId>{instance}</instanceId><device>{device}</device>\
             <status>attaching</status><attachTime>2016-08-29T18:52:32.000Z</attachTime>"
        ))
    }

    fn detach_volume(&mut self, form: &Form) -> Answer {
        let id = required(form, "VolumeId")?;
        let instance = required(form, "InstanceId")?;
        let delay = self.delays.detaching;
        let volume = self.volumes.get_mut(&id).ok_or_else(|| not_found_volume(&id))?;
        let state = volume.state.clone();
        let attachment = volume
            .attachments
            .iter_mut()
            .find(|a| a.instance == instance)
            .ok_or_else(|| (400, "IncorrectState", format!("Volume '{id}' is in the '{state}' state.")))?;
        attachment.state = "detaching".into();
        attachment.pending = delay;
        Ok(format!(
            "<volumeId>{id}</volumeId><instanceId>{instance}</instanceId><device>{}</device><status>detaching</status>",
            attachment.device
        ))
    }

    fn attached_devices(&self, instance: &str) -> Vec<String> {
        self.volumes
            .values()
            .flat_map(|v| &v.attachments)
            .filter(|a| a.instance == instance)
            .map(|a| a.device.clone())
            .collect()
    }

    fn describe_instances(&mut self, form: &Form) -> Answer {
        let ids = list(form, "InstanceId");
        if let Some(missing) = ids.iter().find(|id| !self.instances.contains_key(*id)) {
            return Err(not_found_instance(missing));
        }
        let filters = filters(form);
        let dns_name = |id: &str| self.dns_names.get(id).cloned().unwrap_or_default();
        let mut items = String::new();
        for (id, (zone, used)) in &self.instances {
            let listed = ids.is_empty() || ids.contains(id);
            let matches = filters.iter().all(|(name, values)| match name.as_str() {
                "private-dns-name" => values.contains(&dns_name(id)),
                "instance-id" => values.contains(id),
                _ => false,
            });
            if !listed || !matches {
                continue;
            }
            let mappings: String = used
                .iter()
                .cloned()
                .chain(self.attached_devices(id))
                .map(|device| {
                    format!(
                        "<item><deviceName>{device}</deviceName><ebs><volumeId>vol-00000000</volumeId>\
                         <status>attached</status><deleteOnTermination>false</deleteOnTermination></ebs></item>"
                    )
                })
                .collect();
            items.push_str(&format!(
                "<item><reservationId>r-1234567890abcdef0</reservationId><ownerId>123456789012</ownerId>\
                 <instancesSet><item><instanceId>{id}</instanceId>\
                 <instanceState><code>16</code><name>running</name></instanceState>\
                 <privateDnsName>{}</privateDnsName>\
                 <placement><availabilityZone>{zone}</availabilityZone><tenancy>default</tenancy></placement>\
                 <groupSet><item><groupId>sg-1</groupId></item></groupSet>\
                 <blockDeviceMapping>{mappings}</blockDeviceMapping></item></instancesSet></item>",
                dns_name(id)
            ));
        }
        Ok(format!("<reservationSet>{items}</reservationSet>"))
    }

    fn modify_volume(&mut self, form: &Form) -> Answer {
        let id = required(form, "VolumeId")?;
        let size: Option<u64> = number(form, "Size")?;
        let iops = number(form, "Iops")?;
        let throughput = number(form, "Throughput")?;
        let delay = self.delays.modifying;
        let volume = self.volumes.get_mut(&id).ok_or_else(|| not_found_volume(&id))?;
        if volume.modification.as_ref().is_some_and(|m| m.state == "modifying") {
            return Err((
                400,
                "IncorrectModificationState",
                format!("Cannot modify volume {id} as it is currently being modified"),
            ));
        }
        if size.is_some_and(|size| size < volume.size) {
            return Err(invalid("Size", &size.unwrap_or_default().to_string()));
        }
        let modification = FakeModification {
            state: "modifying".into(),
            size: size.unwrap_or(volume.size),
            volume_type: form.get("VolumeType").cloned().unwrap_or_else(|| volume.volume_type.clone()),
            iops: iops.or(volume.iops),
            throughput: throughput.or(volume.throughput),
            pending: delay,
        };
        let answer =
            format!("<volumeModification>{}</volumeModification>", modification_fields(&id, volume, &modification));
        volume.modification = Some(modification);
        Ok(answer)
    }

    fn describe_modifications(&mut self, form: &Form) -> Answer {
        let mut items = String::new();
        for id in list(form, "VolumeId") {
            let volume = self.volumes.get_mut(&id).ok_or_else(|| not_found_volume(&id))?;
            volume.tick();
            let Some(modification) = &volume.modification else {
                return Err((
                    400,
                    "InvalidVolumeModification.NotFound",
                    format!("Modification for volume '{id}' does not exist."),
                ));
            };
            items.push_str(&format!("<item>{}</item>", modification_fields(&id, volume, modification)));
        }
        Ok(format!("<volumeModificationSet>{items}</volumeModificationSet>"))
    }

    fn create_snapshot(&mut self, form: &Form) -> Answer {
        let volume_id = required(form, "VolumeId")?;
        let size = self.volumes.get(&volume_id).ok_or_else(|| not_found_volume(&volume_id))?.size;
        let id = self.new_id("snap");
        let snapshot = FakeSnapshot {
            id: id.clone(),
            volume: volume_id,
            size,
            state: "pending".into(),
            tags: tags(form, "snapshot"),
            pending: self.delays.snapshot,
        };
        let answer = snapshot_fields(&snapshot);
        self.snapshots.insert(id, snapshot);
        Ok(answer)
    }

    fn describe_snapshots(&mut self, form: &Form) -> Answer {
        let ids = list(form, "SnapshotId");
        if let Some(missing) = ids.iter().find(|id| !self.snapshots.contains_key(*id)) {
            return Err((400, "InvalidSnapshot.NotFound", format!("The snapshot '{missing}' does not exist.")));
        }
        if form.contains_key("MaxResults") && !ids.is_empty() {
            return Err((
                400,
                "InvalidParameterCombination",
                "The parameter SnapshotIds cannot be used with the parameter maxResults".into(),
            ));
        }
        let filters = filters(form);
        let matching: Vec<String> = self
            .snapshots
            .values()
            .filter(|s| ids.is_empty() || ids.contains(&s.id))
            .filter(|s| {
                filters.iter().all(|(name, values)| match name.as_str() {
                    "tag-key" => s.tags.iter().any(|(k, _)| values.contains(k)),
                    "volume-id" => values.contains(&s.volume),
                    tag => tag
                        .strip_prefix("tag:")
                        .is_some_and(|key| s.tags.iter().any(|(k, v)| k == key && values.contains(v))),
                })
            })
            .map(|s| s.id.clone())
            .collect();
        let (page, next) = page(form, &matching)?;
        let mut items = String::new();
        for id in page {
            if let Some(snapshot) = self.snapshots.get_mut(&id) {
                if snapshot.state == "pending" {
                    if snapshot.pending == 0 {
                        snapshot.state = "completed".into();
                    } else {
                        snapshot.pending -= 1;
                    }
                }
                items.push_str(&format!("<item>{}</item>", snapshot_fields(snapshot)));
            }
        }
        Ok(format!("<snapshotSet>{items}</snapshotSet>{next}"))
    }

    fn delete_snapshot(&mut self, form: &Form) -> Answer {
        let id = required(form, "SnapshotId")?;
        self.snapshots
            .remove(&id)
            .ok_or_else(|| (400, "InvalidSnapshot.NotFound", format!("The snapshot '{id}' does not exist.")))?;
        Ok("<return>true</return>".into())
    }
}

impl FakeModification {
    /// Lets the modification move on after `describes` more Describe calls.
    pub fn set_pending(&mut self, describes: u32) {
        self.pending = describes;
    }
}

impl FakeVolume {
    /// One Describe call's worth of progress.
    fn tick(&mut self) {
        if self.state == "creating" {
            if self.pending == 0 {
                self.state = "available".into();
            } else {
                self.pending -= 1;
            }
        }
        for attachment in &mut self.attachments {
            if attachment.pending > 0 {
                attachment.pending -= 1;
            } else if attachment.state == "attaching" {
                attachment.state = "attached".into();
            } else if attachment.state == "detaching" {
                attachment.state = "detached".into();
            }
        }
        self.attachments.retain(|a| a.state != "detached");
        if self.attachments.is_empty() && self.state == "in-use" {
            self.state = "available".into();
        }
        if let Some(modification) = &mut self.modification {
            if modification.pending > 0 {
                modification.pending -= 1;
            } else if modification.state == "modifying" {
                modification.state = "optimizing".into();
                self.size = modification.size;
                self.volume_type = modification.volume_type.clone();
                self.iops = modification.iops;
                self.throughput = modification.throughput;
            } else if modification.state == "optimizing" {
                modification.state = "completed".into();
            }
        }
    }
}

fn volume_fields(volume: &FakeVolume) -> String {
    let attachments: String = volume
        .attachments
        .iter()
        .map(|a| {
            format!(
                "<item><volumeId>{}</volumeId><instanceId>{}</instanceId><device>{}</device><status>{}</status>\
                 <attachTime>2016-08-29T18:52:32.000Z</attachTime><deleteOnTermination>false</deleteOnTermination></item>",
                volume.id, a.instance, a.device, a.state
            )
        })
        .collect();
    let optional =
        |name: &str, value: Option<String>| value.map(|v| format!("<{name}>{v}</{name}>")).unwrap_or_default();
    format!(
        "<volumeId>{}</volumeId><size>{}</size>{}<availabilityZone>{}</availabilityZone><status>{}</status>\
         <createTime>2016-08-29T18:52:32.724Z</createTime><attachmentSet>{attachments}</attachmentSet>{}\
         <volumeType>{}</volumeType>{}{}<encrypted>{}</encrypted>{}<multiAttachEnabled>false</multiAttachEnabled>",
        volume.id,
        volume.size,
        volume.snapshot.as_ref().map_or("<snapshotId/>".to_owned(), |s| format!("<snapshotId>{s}</snapshotId>")),
        volume.zone,
        volume.state,
        tag_set(&volume.tags),
        volume.volume_type,
        optional("iops", volume.iops.map(|v| v.to_string())),
        optional("throughput", volume.throughput.map(|v| v.to_string())),
        volume.encrypted,
        optional("kmsKeyId", volume.kms_key_id.clone()),
    )
}

fn modification_fields(id: &str, volume: &FakeVolume, modification: &FakeModification) -> String {
    let optional = |name: &str, value: Option<u32>| value.map(|v| format!("<{name}>{v}</{name}>")).unwrap_or_default();
    format!(
        "<modificationState>{}</modificationState><originalSize>{}</originalSize><progress>0</progress>\
         <startTime>2017-01-19T23:58:04.922Z</startTime><targetSize>{}</targetSize>\
         <targetVolumeType>{}</targetVolumeType>{}{}<volumeId>{id}</volumeId>",
        modification.state,
        volume.size,
        modification.size,
        modification.volume_type,
        optional("targetIops", modification.iops),
        optional("targetThroughput", modification.throughput),
    )
}

fn snapshot_fields(snapshot: &FakeSnapshot) -> String {
    format!(
        "<snapshotId>{}</snapshotId><volumeId>{}</volumeId><status>{}</status>\
         <startTime>2015-08-30T12:36:00.000Z</startTime><progress>100%</progress><ownerId>123456789012</ownerId>\
         <volumeSize>{}</volumeSize><description>wasmcsi</description><encrypted>false</encrypted>{}",
        snapshot.id,
        snapshot.volume,
        snapshot.state,
        snapshot.size,
        tag_set(&snapshot.tags)
    )
}

fn tag_set(tags: &[(String, String)]) -> String {
    let items: String = tags
        .iter()
        .map(|(k, v)| format!("<item><key>{}</key><value>{}</value></item>", escape(k), escape(v)))
        .collect();
    format!("<tagSet>{items}</tagSet>")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn parse_form(body: &str) -> Form {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// `name.1`, `name.2`, … in order.
fn list(form: &Form, name: &str) -> Vec<String> {
    (1..).map_while(|index| form.get(&format!("{name}.{index}")).cloned()).collect()
}

fn filters(form: &Form) -> Vec<(String, Vec<String>)> {
    (1..)
        .map_while(|index| {
            let prefix = format!("Filter.{index}");
            let name = form.get(&format!("{prefix}.Name"))?;
            Some((name.clone(), list(form, &format!("{prefix}.Value"))))
        })
        .collect()
}

/// The tags of `TagSpecification.N` for `resource_type`.
fn tags(form: &Form, resource_type: &str) -> Vec<(String, String)> {
    (1..)
        .map_while(|index| {
            let prefix = format!("TagSpecification.{index}");
            Some((form.get(&format!("{prefix}.ResourceType"))?.clone(), prefix))
        })
        .filter(|(kind, _)| kind == resource_type)
        .flat_map(|(_, prefix)| {
            (1..)
                .map_while(|index| {
                    let tag = format!("{prefix}.Tag.{index}");
                    Some((form.get(&format!("{tag}.Key"))?.clone(), form.get(&format!("{tag}.Value"))?.clone()))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One page of `ids` by `MaxResults` (5..=1000, as EC2 checks) and `NextToken` (the
/// offset); the rest of the XML carries the next token.
fn page(form: &Form, ids: &[String]) -> Result<(Vec<String>, String), (u16, &'static str, String)> {
    let Some(max) = number::<usize>(form, "MaxResults")? else {
        return Ok((ids.to_vec(), String::new()));
    };
    if !MAX_RESULTS.contains(&max) {
        return Err(invalid("MaxResults", &max.to_string()));
    }
    let offset = match form.get("NextToken") {
        Some(token) => token
            .strip_prefix("offset-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| invalid("NextToken", token))?,
        None => 0,
    };
    let end = (offset + max).min(ids.len());
    let next = if end < ids.len() { format!("<nextToken>offset-{end}</nextToken>") } else { String::new() };
    Ok((ids.get(offset..end).unwrap_or_default().to_vec(), next))
}

fn required(form: &Form, name: &str) -> Result<String, (u16, &'static str, String)> {
    form.get(name).cloned().ok_or_else(|| missing(name))
}

fn number<T: std::str::FromStr>(form: &Form, name: &str) -> Result<Option<T>, (u16, &'static str, String)> {
    form.get(name).map(|value| value.parse().map_err(|_| invalid(name, value))).transpose()
}

fn missing(name: &str) -> (u16, &'static str, String) {
    (400, "MissingParameter", format!("The request must contain the parameter {name}"))
}

fn invalid(name: &str, value: &str) -> (u16, &'static str, String) {
    (400, "InvalidParameterValue", format!("Invalid value '{value}' for {name}"))
}

fn not_found_volume(id: &str) -> (u16, &'static str, String) {
    (400, "InvalidVolume.NotFound", format!("The volume '{id}' does not exist."))
}

fn not_found_instance(id: &str) -> (u16, &'static str, String) {
    (400, "InvalidInstanceID.NotFound", format!("The instance ID '{id}' does not exist"))
}
