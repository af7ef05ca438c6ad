//! What the node side needs from cloud-disk: which disk a volume is (by serial, with the
//! attach's device path as the fallback) and which zone this node is in.
//!
//! Both are plain functions for now; the WIT's coming `disk` device case and
//! `node-topology` export will call them directly.

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
    let path = publish_context
        .iter()
        .find(|(key, _)| key == DEVICE_PATH)
        .map(|(_, path)| path.clone())
        .unwrap_or_default();
    Ok((serial, path))
}

/// This node's topology segment: the availability zone of the instance the host runs on
/// (its node id is the instance id).
pub fn topology(ctx: &Ctx) -> Result<Topology, Error> {
    let node_id = ctx.platform.node_id();
    if !ids::is_instance(&node_id) {
        return Err(Error::FailedPrecondition(format!(
            "node id {node_id:?} is not an EC2 instance id: run the host with --node-id set to it"
        )));
    }
    let ec2 = Ec2::connect(ctx)?;
    let instance = ec2
        .instance(&node_id)?
        .ok_or_else(|| Error::NotFound(format!("node {node_id} is not an instance in this region")))?;
    Ok(topology::segment(&instance.zone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::fake::NODE_ID;
    use crate::fake::{Fixture, ZONE};

    #[test]
    fn the_device_is_the_serial_and_the_attach_path() {
        let context = vec![("devicePath".to_string(), "/dev/xvdba".to_string())];
        assert_eq!(
            device("vol-0123456789abcdef0", &context).unwrap(),
            ("vol0123456789abcdef0".to_string(), "/dev/xvdba".to_string())
        );
        assert_eq!(
            device("vol-1a2b3c4d", &[]).unwrap(),
            ("vol1a2b3c4d".to_string(), String::new())
        );
        assert!(matches!(device("disk-1", &context), Err(Error::NotFound(_))));
    }

    #[test]
    fn topology_is_the_zone_of_this_instance() {
        let fixture = Fixture::new();
        assert_eq!(
            topology(&fixture.ctx()).unwrap(),
            [(topology::ZONE_KEY.to_string(), ZONE.to_string())]
        );
        let form = fixture.ec2.last("DescribeInstances");
        assert_eq!(form["InstanceId.1"], NODE_ID);
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
