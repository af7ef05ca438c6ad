//! Nodes: which EC2 instance a CSI node id names, and what the node side needs from
//! cloud-disk — which disk a volume is (by serial, with the attach's device path as the
//! fallback) and which zone this node is in.
//!
//! A node id is the host's `--node-id`; in a cluster that is the Kubernetes node name,
//! which on EC2 is the instance's private DNS name (`ip-10-0-1-17.eu-west-1.compute.internal`)
//! or its resource name (`i-0abc….eu-west-1.compute.internal`), and may also be the
//! instance id itself. [`instance_id`] accepts all three.

use kit::types::{Error, Topology};

use crate::context::Ctx;
use crate::ec2::Ec2;
use crate::ids;
use crate::topology;

/// The publish context key holding the device name attach chose.
pub const DEVICE_PATH: &str = "devicePath";

/// The disk of `volume_id` on this node: its serial (on Nitro instances the NVMe serial is
/// the volume id without its dash: `vol-0abc…` → `vol0abc…`) and the device path from the
/// publish context (empty when there is none).
pub fn device(volume_id: &str, publish_context: &[(String, String)]) -> Result<(String, String), Error> {
    if !ids::is_volume(volume_id) {
        return Err(Error::NotFound(format!("volume {volume_id:?} does not exist")));
    }
    let serial = volume_id.replacen('-', "", 1);
    let path =
        publish_context.iter().find(|(key, _)| key == DEVICE_PATH).map(|(_, path)| path.clone()).unwrap_or_default();
    Ok((serial, path))
}

/// The EC2 instance node `node_id` is: an instance id as it is, the instance id a
/// resource name starts with, else the one instance whose private DNS name it is
/// (DescribeInstances, filter `private-dns-name`). `None` when no instance has that name;
/// a name several instances share is `not-found`.
pub fn instance_id(ec2: &Ec2, node_id: &str) -> Result<Option<String>, Error> {
    if ids::is_instance(node_id) {
        return Ok(Some(node_id.to_owned()));
    }
    if let Some(instance) = ids::instance_of_resource_name(node_id) {
        return Ok(Some(instance.to_owned()));
    }
    if !ids::is_host_name(node_id) {
        return Ok(None);
    }
    let mut instances = ec2.instances_named(node_id)?;
    match instances.len() {
        0 | 1 => Ok(instances.pop().map(|instance| instance.id)),
        several => Err(Error::NotFound(format!(
            "node {node_id:?} is the private DNS name of {several} EC2 instances ({}): run the host with \
             --node-id set to the instance id",
            instances.iter().map(|instance| instance.id.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// [`instance_id`], with no instance being `not-found`.
pub fn require_instance_id(ec2: &Ec2, node_id: &str) -> Result<String, Error> {
    instance_id(ec2, node_id)?.ok_or_else(|| {
        Error::NotFound(format!(
            "node {node_id:?} is no EC2 instance in this region: a node id is an instance id \
             (i-…), a resource name (i-….<region>.compute.internal) or an instance's private DNS name"
        ))
    })
}

/// This node's topology segment: the availability zone of the instance the host runs on.
pub fn topology(ctx: &Ctx) -> Result<Topology, Error> {
    let node_id = ctx.platform.node_id();
    let ec2 = Ec2::connect(ctx)?;
    let instance_id = require_instance_id(&ec2, &node_id)?;
    let instance = ec2.instance(&instance_id)?.ok_or_else(|| {
        Error::NotFound(format!("node {node_id} (instance {instance_id}) is not an instance in this region"))
    })?;
    Ok(topology::segment(&instance.zone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::fake::{FakePlatform, NODE_ID};
    use crate::fake::{Fixture, NODE_DNS_NAME, OTHER_ZONE, ZONE, ctx_with};
    use crate::settings::Settings;

    #[test]
    fn the_device_is_the_serial_and_the_attach_path() {
        let context = vec![("devicePath".to_string(), "/dev/xvdba".to_string())];
        assert_eq!(
            device("vol-0123456789abcdef0", &context).unwrap(),
            ("vol0123456789abcdef0".to_string(), "/dev/xvdba".to_string())
        );
        assert_eq!(device("vol-1a2b3c4d", &[]).unwrap(), ("vol1a2b3c4d".to_string(), String::new()));
        assert!(matches!(device("disk-1", &context), Err(Error::NotFound(_))));
    }

    #[test]
    fn topology_is_the_zone_of_this_instance() {
        let fixture = Fixture::new();
        assert_eq!(topology(&fixture.ctx()).unwrap(), [(topology::ZONE_KEY.to_string(), ZONE.to_string())]);
        let form = fixture.ec2.last("DescribeInstances");
        assert_eq!(form["InstanceId.1"], NODE_ID);
    }

    #[test]
    fn topology_resolves_a_node_name() {
        let fixture = Fixture::new();
        let platform = FakePlatform::new().with_node_id(NODE_DNS_NAME);
        let ctx = ctx_with(&platform, &fixture.ec2, Settings::for_tests());
        assert_eq!(topology(&ctx).unwrap(), topology::segment(ZONE));
        let calls = fixture.ec2.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].1["Filter.1.Value.1"], NODE_DNS_NAME);
        assert_eq!(calls[1].1["InstanceId.1"], NODE_ID);

        fixture.ec2.add_instance("i-0bbbbbbbbbbbbbbb2", OTHER_ZONE, None);
        let platform = FakePlatform::new().with_node_id("i-0bbbbbbbbbbbbbbb2.us-east-1.compute.internal");
        let ctx = ctx_with(&platform, &fixture.ec2, Settings::for_tests());
        assert_eq!(topology(&ctx).unwrap(), topology::segment(OTHER_ZONE));
        assert_eq!(fixture.ec2.last("DescribeInstances")["InstanceId.1"], "i-0bbbbbbbbbbbbbbb2");

        let platform = FakePlatform::new().with_node_id("worker-7");
        let ctx = ctx_with(&platform, &fixture.ec2, Settings::for_tests());
        let unknown = topology(&ctx).unwrap_err();
        assert!(matches!(&unknown, Error::NotFound(m) if m.contains("\"worker-7\"")), "{unknown:?}");
    }

    #[test]
    fn topology_needs_an_instance_id() {
        let fixture = Fixture::new();
        fixture.ec2.script(
            "DescribeInstances",
            crate::fake::Scripted::Error(400, "InvalidInstanceID.NotFound", "gone".into()),
        );
        let gone = fixture.checked(topology(&fixture.ctx()));
        assert!(matches!(gone, Error::NotFound(_)), "{gone:?}");
    }
}
