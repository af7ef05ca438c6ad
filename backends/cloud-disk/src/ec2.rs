//! The EC2 client: each call is a form POST to the endpoint, signed with SigV4, sent
//! through the transport, retried when it may pass (`retry.rs`), and read back as the
//! response document its action names. The calls the backend makes are typed methods;
//! their failures keep AWS's code so operations can treat some as success.

use kit::types::Error;
use roxmltree::Node;

use crate::context::Ctx;
use crate::credentials::Credentials;
use crate::errors::{AwsError, Failure};
use crate::model::{self, Instance, Modification, Page, Snapshot, Volume};
use crate::parameters::{CreateParameters, Tuning};
use crate::query::Query;
use crate::retry;
use crate::sigv4::{self, Scope};
use crate::support::{NAME_TAG, SNAPSHOT_NAME_TAG};
use crate::transport::HttpRequest;
use crate::xml;

const SERVICE: &str = "ec2";
/// Actions that do something again when repeated: CreateSnapshot has no client token.
/// (CreateVolume has one; the others answer a repeat with an error the operations handle.)
const NOT_IDEMPOTENT: [&str; 1] = ["CreateSnapshot"];
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// One page of a Describe call: `MaxResults` and the `NextToken` of the page before.
pub struct PageRequest<'a> {
    pub max_results: u32,
    pub next_token: Option<&'a str>,
}

/// What CreateVolume is asked to make.
pub struct NewVolume<'a> {
    pub zone: &'a str,
    pub size_gib: u64,
    pub parameters: &'a CreateParameters,
    pub snapshot_id: Option<&'a str>,
    /// Makes a repeated CreateVolume return the first one's volume (at most 64 ASCII characters).
    pub client_token: &'a str,
    pub tags: &'a [(String, String)],
}

/// A signed-in client for one backend call.
pub struct Ec2<'c> {
    ctx: &'c Ctx<'c>,
    credentials: Credentials,
}

impl<'c> Ec2<'c> {
    /// Reads the credentials; missing ones fail here, before anything is sent.
    pub fn connect(ctx: &'c Ctx<'c>) -> Result<Ec2<'c>, Error> {
        Ok(Ec2 { ctx, credentials: Credentials::load(ctx.platform)? })
    }

    /// The volume `id`; `None` when EC2 does not know it.
    pub fn volume(&self, id: &str) -> Result<Option<Volume>, Failure> {
        let query = Query::new("DescribeVolumes").list("VolumeId", &[id]);
        match self.call(query, model::volumes) {
            Ok(page) => Ok(page.items.into_iter().next()),
            Err(failure) if failure.is("InvalidVolume.NotFound") => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    /// The volumes tagged with CSI name `name` (one, unless someone copied the tag).
    pub fn volumes_named(&self, name: &str) -> Result<Vec<Volume>, Failure> {
        let query = Query::new("DescribeVolumes").filter(&format!("tag:{NAME_TAG}"), &[name]);
        Ok(self.call(query, model::volumes)?.items)
    }

    /// A page of the volumes carrying a CSI name.
    pub fn managed_volumes(&self, page: &PageRequest) -> Result<Page<Volume>, Failure> {
        let query = paged(Query::new("DescribeVolumes").filter("tag-key", &[NAME_TAG]), page);
        self.call(query, model::volumes)
    }

    pub fn create_volume(&self, new: &NewVolume) -> Result<Volume, Failure> {
        let parameters = new.parameters;
        let query = Query::new("CreateVolume")
            .param("AvailabilityZone", new.zone)
            .param("Size", new.size_gib.to_string())
            .param("VolumeType", parameters.volume_type.name())
            .optional("Iops", parameters.iops.map(|iops| iops.to_string()))
            .optional("Throughput", parameters.throughput.map(|throughput| throughput.to_string()))
            .optional("Encrypted", parameters.encrypted.map(|encrypted| encrypted.to_string()))
            .optional("KmsKeyId", parameters.kms_key_id.as_deref())
            .optional("SnapshotId", new.snapshot_id)
            .param("ClientToken", new.client_token)
            .tag_specification("volume", new.tags);
        self.call(query, Volume::parse)
    }

    pub fn delete_volume(&self, id: &str) -> Result<(), Failure> {
        self.call(Query::new("DeleteVolume").param("VolumeId", id), ignore)
    }

    pub fn attach_volume(&self, volume_id: &str, instance_id: &str, device: &str) -> Result<(), Failure> {
        let query = Query::new("AttachVolume")
            .param("VolumeId", volume_id)
            .param("InstanceId", instance_id)
            .param("Device", device);
        self.call(query, ignore)
    }

    pub fn detach_volume(&self, volume_id: &str, instance_id: &str) -> Result<(), Failure> {
        let query = Query::new("DetachVolume").param("VolumeId", volume_id).param("InstanceId", instance_id);
        self.call(query, ignore)
    }

    /// The instance `id`: its zone and the device names it uses; `None` when EC2 does not
    /// know it.
    pub fn instance(&self, id: &str) -> Result<Option<Instance>, Failure> {
        let query = Query::new("DescribeInstances").list("InstanceId", &[id]);
        match self.call(query, model::instances) {
            Ok(instances) => Ok(instances.into_iter().next()),
            Err(failure) if failure.is("InvalidInstanceID.NotFound") => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    /// The instances whose private DNS name is `name` (one, unless the name is ambiguous).
    pub fn instances_named(&self, name: &str) -> Result<Vec<Instance>, Failure> {
        let query = Query::new("DescribeInstances").filter("private-dns-name", &[name]);
        self.call(query, model::instances)
    }

    /// Starts changing a volume's size and/or tuning.
    pub fn modify_volume(&self, id: &str, size_gib: Option<u64>, tuning: &Tuning) -> Result<Modification, Failure> {
        let query = Query::new("ModifyVolume")
            .param("VolumeId", id)
            .optional("Size", size_gib.map(|size| size.to_string()))
            .optional("VolumeType", tuning.volume_type.map(|t| t.name()))
            .optional("Iops", tuning.iops.map(|iops| iops.to_string()))
            .optional("Throughput", tuning.throughput.map(|throughput| throughput.to_string()));
        self.call(query, model::modification)
    }

    /// The latest modification of a volume; `None` for one never modified.
    pub fn modification(&self, id: &str) -> Result<Option<Modification>, Failure> {
        let query = Query::new("DescribeVolumesModifications").list("VolumeId", &[id]);
        match self.call(query, model::modifications) {
            Ok(modifications) => Ok(modifications.into_iter().last()),
            Err(failure) if failure.is("InvalidVolumeModification.NotFound") => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    pub fn create_snapshot(
        &self,
        volume_id: &str,
        description: &str,
        tags: &[(String, String)],
    ) -> Result<Snapshot, Failure> {
        let query = Query::new("CreateSnapshot")
            .param("VolumeId", volume_id)
            .param("Description", description)
            .tag_specification("snapshot", tags);
        self.call(query, Snapshot::parse)
    }

    /// The snapshot `id`; `None` when EC2 does not know it.
    pub fn snapshot(&self, id: &str) -> Result<Option<Snapshot>, Failure> {
        let query = Query::new("DescribeSnapshots").list("SnapshotId", &[id]);
        match self.call(query, model::snapshots) {
            Ok(page) => Ok(page.items.into_iter().next()),
            Err(failure) if failure.is("InvalidSnapshot.NotFound") => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    /// This account's snapshots tagged with CSI name `name`.
    pub fn snapshots_named(&self, name: &str) -> Result<Vec<Snapshot>, Failure> {
        let query = Query::new("DescribeSnapshots")
            .list("OwnerId", &["self"])
            .filter(&format!("tag:{SNAPSHOT_NAME_TAG}"), &[name]);
        Ok(self.call(query, model::snapshots)?.items)
    }

    /// A page of this account's snapshots carrying a CSI name, of one volume if given.
    pub fn managed_snapshots(&self, volume_id: Option<&str>, page: &PageRequest) -> Result<Page<Snapshot>, Failure> {
        let mut query =
            Query::new("DescribeSnapshots").list("OwnerId", &["self"]).filter("tag-key", &[SNAPSHOT_NAME_TAG]);
        if let Some(volume_id) = volume_id {
            query = query.filter("volume-id", &[volume_id]);
        }
        self.call(paged(query, page), model::snapshots)
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<(), Failure> {
        self.call(Query::new("DeleteSnapshot").param("SnapshotId", id), ignore)
    }

    /// Sends `query` (retrying what may pass) and reads the `<ActionResponse>` it answers.
    fn call<T>(&self, query: Query, read: impl Fn(Node) -> Result<T, String>) -> Result<T, Failure> {
        let action = query.action();
        let body = query.encode();
        retry::run(self.ctx, action, !NOT_IDEMPOTENT.contains(&action), || {
            let request = self.request(&body);
            let response = self
                .ctx
                .transport
                .send(request)
                .map_err(|error| Failure::transport(action, error, &self.credentials))?;
            let text = String::from_utf8_lossy(&response.body);
            if !(200..300).contains(&response.status) {
                let error = AwsError::from_response(response.status, &text);
                return Err(Failure::aws(action, response.status, error, &self.credentials));
            }
            let malformed = |detail: String| Failure::malformed(action, &detail, &self.credentials);
            let doc = xml::parse(&text).map_err(malformed)?;
            let root = doc.root_element();
            let expected = format!("{action}Response");
            if root.tag_name().name() != expected {
                return Err(malformed(format!("<{}> instead of <{expected}>", root.tag_name().name())));
            }
            read(root).map_err(malformed)
        })
    }

    /// The signed POST of a form `body`, signed now (each retry is signed afresh).
    fn request(&self, body: &str) -> HttpRequest {
        let settings = &self.ctx.settings;
        let mut request = HttpRequest {
            method: "POST",
            scheme: settings.endpoint.scheme,
            authority: settings.endpoint.authority.clone(),
            path_and_query: settings.endpoint.path.clone(),
            headers: vec![
                ("content-type".into(), CONTENT_TYPE.into()),
                ("content-length".into(), body.len().to_string()),
            ],
            body: body.as_bytes().to_vec(),
        };
        let scope = Scope { region: &settings.region, service: SERVICE };
        sigv4::sign(&mut request, &self.credentials, &scope, self.ctx.platform.now());
        request
    }
}

fn paged(query: Query, page: &PageRequest) -> Query {
    query.param("MaxResults", page.max_results.to_string()).optional("NextToken", page.next_token)
}

/// For actions whose answer carries nothing the backend needs (`<return>true</return>`).
fn ignore(_: Node) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::fake::{self, FakePlatform};
    use crate::fake::{FakeEc2, Scripted, ctx_with};
    use crate::settings::Settings;

    #[test]
    fn requests_are_signed_form_posts_to_the_endpoint() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let client = Ec2::connect(&ctx).unwrap();
        assert_eq!(client.volume("vol-0123456789abcdef0").unwrap(), None);
        let requests = ec2.requests();
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.origin(), "http://127.0.0.1:4566");
        assert_eq!(request.path_and_query, "/");
        assert_eq!(
            String::from_utf8_lossy(&request.body),
            "Action=DescribeVolumes&Version=2016-11-15&VolumeId.1=vol-0123456789abcdef0"
        );
        let header = |name: &str| request.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(header("content-type"), "application/x-www-form-urlencoded; charset=utf-8");
        assert_eq!(header("content-length"), request.body.len().to_string());
        assert_eq!(header("x-amz-date"), "20150830T123600Z");
        assert_eq!(header("x-amz-security-token"), fake::SESSION_TOKEN);
        assert!(header("authorization").starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={}/20150830/us-east-1/ec2/aws4_request, \
             SignedHeaders=content-length;content-type;host;x-amz-date;x-amz-security-token, Signature=",
            fake::ACCESS_KEY_ID
        )));
        // The fake checks every signature against the granted secret.
        assert_eq!(ec2.bad_signatures(), 0);
    }

    #[test]
    fn missing_credentials_send_nothing() {
        let platform = FakePlatform::new();
        platform.secrets.borrow_mut().remove("AWS_SECRET_ACCESS_KEY");
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let error = Ec2::connect(&ctx).err().unwrap();
        assert!(matches!(&error, Error::FailedPrecondition(m) if m.contains("AWS_SECRET_ACCESS_KEY")));
        assert!(ec2.requests().is_empty());
    }

    #[test]
    fn wrong_credentials_are_a_credentials_error() {
        let platform = FakePlatform::new();
        platform.secrets.borrow_mut().insert("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret".into());
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let error: Error = Ec2::connect(&ctx).unwrap().volume("vol-0123456789abcdef0").unwrap_err().into();
        assert!(
            matches!(&error, Error::FailedPrecondition(m) if m.contains("SignatureDoesNotMatch") && m.contains("IAM")),
            "{error:?}"
        );
        crate::fake::assert_no_credentials(&format!("{error:?}"));
        assert!(!format!("{error:?}").contains("not-the-secret"));
    }

    #[test]
    fn timeouts_are_retried_then_unavailable() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let client = Ec2::connect(&ctx).unwrap();
        ec2.script("DescribeVolumes", Scripted::Timeout);
        assert_eq!(client.volume("vol-0123456789abcdef0").unwrap(), None);
        assert_eq!(ec2.count("DescribeVolumes"), 2);

        for _ in 0..5 {
            ec2.script("DescribeVolumes", Scripted::Timeout);
        }
        let error: Error = client.volume("vol-0123456789abcdef0").unwrap_err().into();
        assert!(
            matches!(&error, Error::Unavailable(m)
                if m == "EC2 DescribeVolumes failed: POST http://127.0.0.1:4566: timed out (gave up after 5 attempts)"),
            "{error:?}"
        );
    }

    #[test]
    fn answers_without_results_are_accepted() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let client = Ec2::connect(&ctx).unwrap();
        ec2.script_raw(200, include_str!("../fixtures/attach_volume.xml"));
        client.attach_volume("vol-1234567890abcdef0", "i-1234567890abcdef0", "/dev/xvdba").unwrap();
        ec2.script_raw(200, include_str!("../fixtures/delete_volume.xml"));
        client.delete_volume("vol-1234567890abcdef0").unwrap();
    }

    #[test]
    fn an_unexpected_document_is_internal() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        ec2.script_raw(200, "<DeleteVolumeResponse><return>true</return></DeleteVolumeResponse>");
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let error: Error = Ec2::connect(&ctx).unwrap().volume("vol-0123456789abcdef0").unwrap_err().into();
        assert!(
            matches!(&error, Error::Internal(m) if m.contains("<DeleteVolumeResponse> instead of <DescribeVolumesResponse>")),
            "{error:?}"
        );
    }
}
