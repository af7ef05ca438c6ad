//! The cloud-disk backend, run as the shipped component (`builtin:cloud-disk`) in wasmtime
//! through the real host runtime, against the crate's own fake EC2 (`cloud_disk::fake`,
//! crate feature `fake`) behind the testkit's fake HTTP: every request the component makes
//! passes the host's origin grant check, reaches the fake as the HTTP request wasi:http
//! built, and is answered in EC2's response shapes. The fake verifies each request's SigV4
//! signature with the crate's own signer and the expected credentials (a bad one is
//! answered `SignatureDoesNotMatch` and counted).
//!
//! State changes take real (wall-clock) polls here: a volume stays `creating` or an
//! attachment `attaching` for a set number of Describe calls, so tests that wait spend a
//! second or two each.

use std::sync::Arc;

use backend_testkit::types::{Capacity, Disk};
use backend_testkit::{
    AccessMode, AccessType, BackendError, Builder, CallError, CreateVolumeRequest, Device, Features, HttpCall,
    HttpError, Params, Secrets, TestHost, Volume, VolumeCapability, backend_error, volume_request,
};
use cloud_disk::fake::{
    self, ACCESS_KEY_ID, Delays, FakeEc2, NODE_DNS_NAME, NODE_ID, OTHER_ZONE, SECRET_ACCESS_KEY, SESSION_TOKEN,
    Scripted, TimedOut, ZONE, assert_no_credentials,
};

const GIB: u64 = 1 << 30;
/// The origin the instance is granted, and the endpoint it is configured with.
const ORIGIN: &str = "http://ec2.test:80";
const ZONE_KEY: &str = "topology.kubernetes.io/zone";

/// A loaded cloud-disk instance and the fake EC2 behind its HTTP grant.
struct Ec2Kit {
    kit: TestHost,
    ec2: Arc<FakeEc2>,
}

/// The instance as production would configure it, pointed at the fake: region, endpoint,
/// grant, node id; `configure` adjusts it.
fn start(configure: impl FnOnce(Builder) -> Builder) -> Ec2Kit {
    let ec2 = Arc::new(FakeEc2::new());
    let served = ec2.clone();
    let builder = TestHost::builder(backend_bundle::CLOUD_DISK)
        .http_origin(ORIGIN)
        .setting("region", fake::REGION)
        .setting("endpoint", ORIGIN)
        .node_id(NODE_ID)
        .http_respond(move |call: &HttpCall| {
            served
                .serve(&call.method, &call.uri, &call.headers, &call.body)
                .map_err(|TimedOut| HttpError::ConnectionReadTimeout)
        });
    let kit = configure(builder).build().expect("load cloud-disk");
    Ec2Kit { kit, ec2 }
}

fn secrets_of(key_id: &str, secret: &str, token: Option<&str>) -> Secrets {
    let mut pairs = vec![("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret)];
    pairs.extend(token.map(|token| ("AWS_SESSION_TOKEN", token)));
    Secrets(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// The credentials the fake expects, as a CSI request's `secrets`.
fn secrets() -> Secrets {
    secrets_of(ACCESS_KEY_ID, SECRET_ACCESS_KEY, Some(SESSION_TOKEN))
}

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A 10 GiB gp3 request for `name`, in [`ZONE`].
fn request(name: &str) -> CreateVolumeRequest {
    let mut request = volume_request(name, 10 * GIB, 0);
    request.accessibility = Some(backend_testkit::types::TopologyRequirement {
        requisite: vec![params(&[(ZONE_KEY, ZONE)])],
        preferred: vec![params(&[(ZONE_KEY, ZONE)])],
    });
    request
}

fn block() -> VolumeCapability {
    VolumeCapability { access_type: AccessType::Block, access_mode: AccessMode::SingleNodeWriter }
}

impl Ec2Kit {
    fn create(&self, request: CreateVolumeRequest) -> Result<Volume, CallError> {
        self.kit.block_on(self.kit.backend().create_volume(secrets(), (), request))
    }

    fn get(&self, volume_id: &str) -> Result<Volume, CallError> {
        self.kit.block_on(self.kit.backend().get_volume(secrets(), volume_id))
    }

    fn delete(&self, volume_id: &str) -> Result<(), CallError> {
        self.kit.block_on(self.kit.backend().delete_volume(secrets(), (), volume_id))
    }

    fn publish(&self, volume_id: &str, node_id: &str) -> Result<Params, CallError> {
        let publish = self.kit.backend().controller_publish(secrets(), (), volume_id, node_id, block(), false, vec![]);
        self.kit.block_on(publish)
    }

    fn unpublish(&self, volume_id: &str, node_id: &str) -> Result<(), CallError> {
        self.kit.block_on(self.kit.backend().controller_unpublish(secrets(), (), volume_id, node_id))
    }

    fn node_topology(&self) -> Result<Params, CallError> {
        self.kit.block_on(self.kit.backend().node_topology(secrets()))
    }

    /// Every request reached the fake as sent (none lost between the testkit and the fake),
    /// each a signed form POST to the endpoint that the fake's signature check accepted.
    fn assert_all_signed(&self) {
        let calls = self.kit.http().calls();
        assert_eq!(calls.len(), self.ec2.actions().len());
        for call in &calls {
            assert_eq!(call.method, "POST");
            assert_eq!(call.uri, format!("{ORIGIN}/"));
            assert_eq!(call.header("content-type"), Some("application/x-www-form-urlencoded; charset=utf-8"));
            let date = call.header("x-amz-date").expect("x-amz-date");
            assert_eq!(date.len(), 16, "{date}");
            assert!(date.ends_with('Z') && date.as_bytes()[8] == b'T', "{date}");
            let authorization = call.header("authorization").expect("authorization");
            let credential =
                format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/{}/us-east-1/ec2/aws4_request, ", &date[..8]);
            assert!(authorization.starts_with(&credential), "{authorization}");
            assert!(
                authorization.contains(
                    "SignedHeaders=content-length;content-type;host;x-amz-date;x-amz-security-token, Signature="
                ),
                "{authorization}"
            );
            assert_eq!(call.header("x-amz-security-token"), Some(SESSION_TOKEN));
        }
        assert_eq!(self.ec2.bad_signatures(), 0);
    }
}

/// A backend error's message, checked to hold no credential.
fn failure(result: Result<impl std::fmt::Debug, CallError>) -> BackendError {
    let error = backend_error(result);
    assert_no_credentials(&format!("{error:?}"));
    error
}

// ---------------------------------------------------------------------------------------

/// A volume's whole controller and node life through the sandbox, with EC2 slow to create
/// and to attach: each wait is polled out within the call.
#[test]
fn a_volume_is_created_attached_found_detached_and_deleted() {
    let cloud = start(|b| b);
    cloud.ec2.set_delays(Delays { creating: 1, attaching: 1, detaching: 1, ..Delays::default() });

    let volume = cloud.create(request("pvc-1")).unwrap();
    assert!(volume.id.starts_with("vol-"), "{}", volume.id);
    assert_eq!(volume.capacity_bytes, 10 * GIB);
    assert_eq!(volume.accessible_topology, [params(&[(ZONE_KEY, ZONE)])]);
    let made = cloud.ec2.volume(&volume.id).unwrap();
    assert_eq!((made.state.as_str(), made.size, made.volume_type.as_str()), ("available", 10, "gp3"));
    assert!(made.tags.contains(&("CSIVolumeName".into(), "pvc-1".into())), "{:?}", made.tags);
    // Created, then described until available.
    assert_eq!(cloud.ec2.actions(), ["DescribeVolumes", "CreateVolume", "DescribeVolumes", "DescribeVolumes"]);

    let context = cloud.publish(&volume.id, NODE_ID).unwrap();
    let device = context.iter().find(|(k, _)| k == "devicePath").map(|(_, v)| v.clone()).expect("devicePath");
    assert!(device.starts_with("/dev/xvd"), "{device}");
    let attached = cloud.ec2.volume(&volume.id).unwrap();
    assert_eq!(attached.attachments[0].instance, NODE_ID);
    assert_eq!(attached.attachments[0].state, "attached");
    assert_eq!(cloud.ec2.last("AttachVolume")["Device"], device);

    let disk = cloud.kit.node_device(&volume.id, Vec::new(), context.clone()).unwrap();
    let serial = volume.id.replacen('-', "", 1);
    assert!(serial.starts_with("vol") && !serial.contains('-'));
    assert_eq!(disk, Device::Disk(Disk { serial: serial.clone(), path: device.clone() }));
    // Without a publish context the host has the serial only.
    assert_eq!(
        cloud.kit.node_device(&volume.id, Vec::new(), Vec::new()).unwrap(),
        Device::Disk(Disk { serial, path: String::new() })
    );

    // Attached: EC2 refuses the delete, and the CO hears why.
    let in_use = failure(cloud.delete(&volume.id));
    assert!(matches!(&in_use, BackendError::FailedPrecondition(m) if m.contains("VolumeInUse")), "{in_use:?}");

    cloud.unpublish(&volume.id, NODE_ID).unwrap();
    assert!(cloud.ec2.volume(&volume.id).unwrap().attachments.is_empty());
    cloud.delete(&volume.id).unwrap();
    assert!(cloud.ec2.volume(&volume.id).is_none());
    // Gone: get is not-found, delete again succeeds.
    let gone = failure(cloud.get(&volume.id));
    assert!(matches!(gone, BackendError::NotFound(_)), "{gone:?}");
    cloud.delete(&volume.id).unwrap();
    cloud.assert_all_signed();
}

/// What goes on the wire: the form body (Action, Version, percent-encoding, tag
/// specifications, a ClientToken derived from the name) and the signature headers.
#[test]
fn requests_are_signed_form_posts() {
    let cloud = start(|b| b.setting("tags", "team=storage ops,cost/center=a&b"));
    let mut with_parameters = request("pvc-encoded");
    with_parameters.parameters = params(&[("type", "io2"), ("iops", "5000"), ("encrypted", "true")]);
    cloud.create(with_parameters.clone()).unwrap();

    let calls = cloud.kit.http().calls();
    let create = calls.iter().find(|c| String::from_utf8_lossy(&c.body).starts_with("Action=CreateVolume&")).unwrap();
    let body = String::from_utf8(create.body.clone()).unwrap();
    assert!(body.starts_with("Action=CreateVolume&Version=2016-11-15&"), "{body}");
    assert_eq!(create.header("content-length"), Some(body.len().to_string().as_str()));
    for encoded in ["storage%20ops", "cost%2Fcenter", "a%26b", "AvailabilityZone=us-east-1a", "VolumeType=io2"] {
        assert!(body.contains(encoded), "{encoded} in {body}");
    }
    let form = cloud.ec2.last("CreateVolume");
    assert_eq!(form["Version"], "2016-11-15");
    assert_eq!(form["Size"], "10");
    assert_eq!(form["Iops"], "5000");
    assert_eq!(form["Encrypted"], "true");
    assert_eq!(form["TagSpecification.1.ResourceType"], "volume");
    let token = form["ClientToken"].clone();
    assert!(!token.is_empty() && token.len() <= 64, "{token}");
    let tags = cloud.ec2.volumes()[0].tags.clone();
    for tag in [("CSIVolumeName", "pvc-encoded"), ("team", "storage ops"), ("cost/center", "a&b")] {
        assert!(tags.contains(&(tag.0.into(), tag.1.into())), "{tag:?} in {tags:?}");
    }
    // Lost from the fake's records (as if EC2 forgot the tag lookup), a repeat carries the
    // same token, so EC2 hands back the same volume.
    cloud.ec2.edit_volume(&cloud.ec2.volumes()[0].id, |v| v.tags.clear());
    cloud.create(with_parameters).unwrap();
    assert_eq!(cloud.ec2.last("CreateVolume")["ClientToken"], token);
    assert_eq!(cloud.ec2.volumes().len(), 1);
    cloud.assert_all_signed();
}

/// EC2's real response documents (captured shapes, namespaced) are read through the
/// sandbox: an in-use volume with its attachment, tags and snapshot.
#[test]
fn real_response_documents_are_read() {
    let cloud = start(|b| b);
    cloud.ec2.script_raw(200, include_str!("../../cloud-disk/fixtures/describe_volumes.xml"));
    let volume = cloud.get("vol-1234567890abcdef0").unwrap();
    assert_eq!(volume.id, "vol-1234567890abcdef0");
    assert_eq!(volume.capacity_bytes, 80 * GIB);
    assert_eq!(volume.accessible_topology, [params(&[(ZONE_KEY, "us-east-1a")])]);
    assert_eq!(volume.content_source, Some(backend_testkit::ContentSource::Snapshot("snap-1234567890abcdef0".into())));
    // EC2's error document: `InvalidVolume.NotFound`.
    cloud.ec2.script_raw(400, include_str!("../../cloud-disk/fixtures/error.xml"));
    let error = failure(cloud.get("vol-1234567890abcdef0"));
    assert!(matches!(&error, BackendError::NotFound(m) if m.contains("vol-1234567890abcdef0")), "{error:?}");
}

/// Without CSI secrets and without a granted host environment nothing is sent and the CO is
/// told which secret is missing. (Credentials from the granted environment of a real host
/// process are covered by tests/cloud_disk.rs; this process leaves its environment alone.)
#[test]
fn missing_credentials_are_named_and_nothing_is_sent() {
    let ungranted = start(|b| b);
    let missing = failure(ungranted.kit.node_topology());
    assert!(matches!(&missing, BackendError::FailedPrecondition(m) if m.contains("AWS_ACCESS_KEY_ID")), "{missing:?}");
    assert!(ungranted.kit.http().calls().is_empty());
}

/// A wrong secret is refused by EC2's signature check; AWS's own messages are passed on
/// without any credential in them.
#[test]
fn credential_failures_are_failed_precondition_without_credentials() {
    let cloud = start(|b| b);
    let wrong = secrets_of(ACCESS_KEY_ID, "not-the-secret-access-key-0000000000000000", Some(SESSION_TOKEN));
    let error = failure(cloud.kit.block_on(cloud.kit.backend().get_volume(wrong, "vol-0123456789abcdef0")));
    assert!(matches!(&error, BackendError::FailedPrecondition(m) if m.contains("SignatureDoesNotMatch")), "{error:?}");
    assert_eq!(cloud.ec2.bad_signatures(), 1);
    // Not retried: a refused signature does not pass on a second try.
    assert_eq!(cloud.kit.http().calls().len(), 1);

    let leak =
        format!("The key {ACCESS_KEY_ID} with secret {SECRET_ACCESS_KEY} and token {SESSION_TOKEN} is not valid");
    cloud.ec2.script("DescribeVolumes", Scripted::Error(401, "AuthFailure", leak));
    let error = failure(cloud.get("vol-0123456789abcdef0"));
    assert!(
        matches!(&error, BackendError::FailedPrecondition(m) if m.contains("AuthFailure") && m.contains("[redacted]")),
        "{error:?}"
    );
}

/// A slow create outlasts the call's wait budget: `unavailable`, and the CO's retry finds
/// the volume by its name tag and waits it out — one volume, one CreateVolume.
#[test]
fn an_exhausted_wait_budget_is_unavailable_and_the_retry_completes() {
    let cloud = start(|b| b.setting("wait-budget-ms", "1500"));
    cloud.ec2.set_delays(Delays { creating: 2, attaching: 2, ..Delays::default() });
    let first = failure(cloud.create(request("pvc-slow")));
    assert!(
        matches!(&first, BackendError::Unavailable(m) if m.contains("creating") && m.contains("retry")),
        "{first:?}"
    );
    let volume = cloud.create(request("pvc-slow")).unwrap();
    assert_eq!(cloud.ec2.count("CreateVolume"), 1);
    assert_eq!(cloud.ec2.volumes().len(), 1);
    assert_eq!(cloud.ec2.volume(&volume.id).unwrap().state, "available");

    let first = failure(cloud.publish(&volume.id, NODE_ID));
    assert!(matches!(&first, BackendError::Unavailable(m) if m.contains("attaching")), "{first:?}");
    let context = cloud.publish(&volume.id, NODE_ID).unwrap();
    assert_eq!(cloud.ec2.count("AttachVolume"), 1);
    assert_eq!(context[0].1, cloud.ec2.volume(&volume.id).unwrap().attachments[0].device);
    cloud.assert_all_signed();
}

/// Throttling and AWS-side failures are retried (signed afresh) within the call; a
/// timeout of an idempotent call too.
#[test]
fn throttling_and_server_errors_are_retried() {
    let cloud = start(|b| b);
    cloud.ec2.script("CreateVolume", Scripted::throttle());
    cloud.ec2.script("CreateVolume", Scripted::server_error());
    cloud.ec2.script("DescribeVolumes", Scripted::Error(503, "Unavailable", "The server is overloaded.".into()));
    cloud.ec2.script("DescribeInstances", Scripted::Timeout);
    let volume = cloud.create(request("pvc-retried")).unwrap();
    assert_eq!(cloud.ec2.count("CreateVolume"), 3);
    let tokens: Vec<String> = cloud
        .ec2
        .calls()
        .into_iter()
        .filter(|(action, _)| action == "CreateVolume")
        .map(|(_, form)| form["ClientToken"].clone())
        .collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    assert_eq!(cloud.ec2.volumes().len(), 1);
    assert_eq!(cloud.node_topology().unwrap(), params(&[(ZONE_KEY, ZONE)]));
    assert_eq!(cloud.ec2.count("DescribeInstances"), 2);
    assert!(!volume.id.is_empty());
    // Endless throttling gives up as unavailable, for the CO to retry later.
    for _ in 0..5 {
        cloud.ec2.script("DescribeVolumes", Scripted::throttle());
    }
    let throttled = failure(cloud.get(&volume.id));
    assert!(matches!(&throttled, BackendError::Unavailable(m) if m.contains("RequestLimitExceeded")), "{throttled:?}");
    cloud.assert_all_signed();
}

/// EC2's error codes become the CSI codes the CO acts on.
#[test]
fn ec2_errors_map_to_csi_codes() {
    let cloud = start(|b| b);
    let missing = failure(cloud.get("vol-0123456789abcdef9"));
    assert!(matches!(missing, BackendError::NotFound(_)), "{missing:?}");
    let no_such_id = failure(cloud.publish("not-a-volume", NODE_ID));
    assert!(matches!(no_such_id, BackendError::NotFound(_)), "{no_such_id:?}");

    let volume = cloud.ec2.add_volume(10, ZONE, &[("CSIVolumeName", "pvc-x")]);
    cloud
        .ec2
        .script("AttachVolume", Scripted::Error(400, "AttachmentLimitExceeded", "Attachment limit exceeded".into()));
    let limit = failure(cloud.publish(&volume, NODE_ID));
    assert!(matches!(&limit, BackendError::ResourceExhausted(m) if m.contains("AttachmentLimitExceeded")), "{limit:?}");

    let far = cloud.ec2.add_volume(10, OTHER_ZONE, &[]);
    let zone = failure(cloud.publish(&far, NODE_ID));
    assert!(matches!(&zone, BackendError::FailedPrecondition(m) if m.contains(OTHER_ZONE)), "{zone:?}");

    cloud.ec2.attach_outside(&volume, fake::OTHER_NODE, "/dev/xvdbb", "attached");
    let elsewhere = failure(cloud.publish(&volume, NODE_ID));
    assert!(matches!(&elsewhere, BackendError::FailedPrecondition(m) if m.contains(fake::OTHER_NODE)), "{elsewhere:?}");
    let in_use = failure(cloud.delete(&volume));
    assert!(matches!(&in_use, BackendError::FailedPrecondition(m) if m.contains("VolumeInUse")), "{in_use:?}");

    let invalid = failure(cloud.create({
        let mut r = request("pvc-bad");
        r.parameters = params(&[("type", "io1")]);
        r
    }));
    assert!(matches!(invalid, BackendError::InvalidArgument(_)), "{invalid:?}");
    cloud.assert_all_signed();
}

/// An endpoint outside the HTTP grant: the host refuses the request before any traffic,
/// and the CO is told which origin to grant.
#[test]
fn an_endpoint_outside_the_grant_is_denied_before_any_traffic() {
    for endpoint in ["http://ec2.test:8080", "https://ec2.test:80", "http://metadata.test:80"] {
        let cloud = start(|b| b.setting("endpoint", endpoint));
        let denied = failure(cloud.get("vol-0123456789abcdef0"));
        assert!(
            matches!(&denied, BackendError::FailedPrecondition(m) if m.contains(endpoint) && m.contains("grant")),
            "{endpoint}: {denied:?}"
        );
        assert!(cloud.kit.http().calls().is_empty(), "{endpoint}");
        assert!(cloud.ec2.actions().is_empty(), "{endpoint}");
    }
}

/// NodeGetInfo's segment: the zone of the node's instance, whether the node id is the
/// instance id, its resource name or its private DNS name (the Kubernetes node name).
#[test]
fn node_topology_is_the_zone_of_the_nodes_instance() {
    let cloud = start(|b| b);
    assert_eq!(cloud.node_topology().unwrap(), params(&[(ZONE_KEY, ZONE)]));
    assert_eq!(cloud.ec2.last("DescribeInstances")["InstanceId.1"], NODE_ID);

    let by_dns = start(|b| b.node_id(NODE_DNS_NAME));
    assert_eq!(by_dns.node_topology().unwrap(), params(&[(ZONE_KEY, ZONE)]));
    let calls = by_dns.ec2.calls();
    assert_eq!(calls[0].1["Filter.1.Name"], "private-dns-name");
    assert_eq!(calls[0].1["Filter.1.Value.1"], NODE_DNS_NAME);
    assert_eq!(calls[1].1["InstanceId.1"], NODE_ID);

    let far = format!("{}.us-east-1.compute.internal", fake::FAR_NODE);
    let by_resource_name = start(|b| b.node_id(&far));
    assert_eq!(by_resource_name.node_topology().unwrap(), params(&[(ZONE_KEY, OTHER_ZONE)]));
    assert_eq!(by_resource_name.ec2.actions(), ["DescribeInstances"]);

    let unknown = start(|b| b.node_id("worker-3"));
    let error = failure(unknown.node_topology());
    assert!(matches!(&error, BackendError::NotFound(m) if m.contains("worker-3")), "{error:?}");
    by_dns.assert_all_signed();
}

/// ControllerPublish/Unpublish with the Kubernetes node name attach to its instance.
#[test]
fn publish_resolves_kubernetes_node_names() {
    let cloud = start(|b| b);
    let volume = cloud.ec2.add_volume(10, ZONE, &[("CSIVolumeName", "pvc-n")]);
    let context = cloud.publish(&volume, NODE_DNS_NAME).unwrap();
    assert_eq!(cloud.ec2.last("AttachVolume")["InstanceId"], NODE_ID);
    assert_eq!(context[0].1, cloud.ec2.volume(&volume).unwrap().attachments[0].device);
    cloud.unpublish(&volume, NODE_DNS_NAME).unwrap();
    assert_eq!(cloud.ec2.last("DetachVolume")["InstanceId"], NODE_ID);
    assert!(cloud.ec2.volume(&volume).unwrap().attachments.is_empty());

    let unknown = failure(cloud.publish(&volume, "ip-10-9-9-9.ec2.internal"));
    assert!(matches!(&unknown, BackendError::NotFound(m) if m.contains("ip-10-9-9-9.ec2.internal")), "{unknown:?}");
    // Nothing can be attached to a node that is no instance: the unpublish is done.
    cloud.unpublish(&volume, "ip-10-9-9-9.ec2.internal").unwrap();
    assert_eq!(cloud.ec2.count("AttachVolume"), 1);
    cloud.assert_all_signed();
}

/// GetCapacity: the class's volume type size range, with no request to AWS.
#[test]
fn capacity_is_the_volume_type_size_range() {
    let cloud = start(|b| b.setting("default-volume-type", "st1"));
    assert!(cloud.kit.info().features.contains(Features::GET_CAPACITY));
    let capacity = |parameters: &[(&str, &str)]| cloud.kit.get_capacity(vec![block()], params(parameters), None);
    let range = |c: Capacity| (c.available_bytes, c.maximum_volume_size, c.minimum_volume_size);
    assert_eq!(range(capacity(&[]).unwrap()), (16_384 * GIB, 16_384 * GIB, 125 * GIB));
    assert_eq!(range(capacity(&[("type", "gp3")]).unwrap()), (16_384 * GIB, 16_384 * GIB, GIB));
    assert_eq!(range(capacity(&[("type", "io2"), ("iops", "1000")]).unwrap()), (65_536 * GIB, 65_536 * GIB, 4 * GIB));
    let zoned =
        cloud.kit.get_capacity(vec![block()], params(&[("type", "standard")]), Some(params(&[(ZONE_KEY, ZONE)])));
    assert_eq!(range(zoned.unwrap()), (1_024 * GIB, 1_024 * GIB, GIB));
    for bad in
        [&[("type", "gp9")][..], &[("type", "io1")], &[("throughput", "250"), ("type", "gp2")], &[("color", "red")]]
    {
        let error = failure(capacity(bad));
        assert!(matches!(error, BackendError::InvalidArgument(_)), "{bad:?}: {error:?}");
    }
    assert!(cloud.kit.http().calls().is_empty());
}
