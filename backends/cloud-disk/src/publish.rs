//! Attaching a volume to a node (CSI ControllerPublishVolume) and detaching it
//! (ControllerUnpublishVolume). The node id names an EC2 instance (`node::instance_id`).
//!
//! Both start from what EC2 reports, so a retry after a timeout, a crash or an answer of
//! `unavailable` continues where the last attempt stopped. Attach picks a device name the
//! instance does not use, starting at a point derived from the volume id so concurrent
//! attaches to one node rarely reach for the same name.

use kit::types::{Error, Params};
use sha2::{Digest, Sha256};

use crate::context::Ctx;
use crate::ec2::Ec2;
use crate::ids;
use crate::node::{self, DEVICE_PATH};
use crate::volumes;
use crate::wait::{self, Poll};

/// Attaches `volume_id` to the instance of node `node_id` and waits until it is attached.
/// The publish context carries the device name (`devicePath`).
pub fn attach(ctx: &Ctx, volume_id: &str, node_id: &str) -> Result<Params, Error> {
    let ec2 = Ec2::connect(ctx)?;
    let volume = volumes::require(&ec2, volume_id)?;
    let instance_id = node::require_instance_id(&ec2, node_id)?;
    let node_id = instance_id.as_str();
    if let Some(attachment) = volume.attachment(node_id) {
        let device = attachment.device.clone();
        match attachment.state.as_str() {
            "attached" | "busy" => return Ok(publish_context(device)),
            "attaching" => {
                wait_attached(ctx, &ec2, volume_id, node_id, "attaching")?;
                return Ok(publish_context(device));
            }
            // Detaching (or detached and about to vanish): attach again once it is gone.
            _ => wait_detached(ctx, &ec2, volume_id, node_id, &attachment.state)?,
        }
    }
    if let Some(other) =
        volume.attachments.iter().find(|attachment| attachment.instance_id != node_id && attachment.state != "detached")
    {
        return Err(Error::FailedPrecondition(format!(
            "volume {volume_id} is {} to node {}; an EBS volume attaches to one node at a time",
            other.state, other.instance_id
        )));
    }
    let instance = ec2
        .instance(node_id)?
        .ok_or_else(|| Error::NotFound(format!("node {node_id} is not an instance in this region")))?;
    if instance.zone != volume.zone {
        return Err(Error::FailedPrecondition(format!(
            "volume {volume_id} is in zone {} and node {node_id} in zone {}: EBS attaches within a zone only",
            volume.zone, instance.zone
        )));
    }
    let device = pick_device(&ctx.settings.device_names, &instance.devices, volume_id).ok_or_else(|| {
        Error::ResourceExhausted(format!(
            "node {node_id} uses every device name this backend may attach at ({} names)",
            ctx.settings.device_names.len()
        ))
    })?;
    ec2.attach_volume(volume_id, node_id, &device)?;
    ctx.platform.info(&format!("attaching volume {volume_id} to node {node_id} at {device}"));
    wait_attached(ctx, &ec2, volume_id, node_id, "attaching")?;
    Ok(publish_context(device))
}

/// Detaches `volume_id` from `node_id` and waits until it is gone. A volume or node that
/// does not exist, or a volume not attached there, is already detached.
pub fn detach(ctx: &Ctx, volume_id: &str, node_id: &str) -> Result<(), Error> {
    if !ids::is_volume(volume_id) {
        return Ok(());
    }
    let ec2 = Ec2::connect(ctx)?;
    let Some(node_id) = node::instance_id(&ec2, node_id)? else {
        return Ok(());
    };
    let node_id = node_id.as_str();
    let Some(volume) = ec2.volume(volume_id)? else {
        return Ok(());
    };
    let state = match volume.attachment(node_id).map(|attachment| attachment.state.as_str()) {
        None | Some("detached") => return Ok(()),
        Some("detaching") => "detaching",
        Some(_) => match ec2.detach_volume(volume_id, node_id) {
            Ok(()) => {
                ctx.platform.info(&format!("detaching volume {volume_id} from node {node_id}"));
                "detaching"
            }
            // Detaching or detached meanwhile (or by an earlier try whose answer was lost):
            // wait for what EC2 reports.
            Err(failure) if failure.is("IncorrectState") || failure.is("InvalidAttachment.NotFound") => "detaching",
            Err(failure) => return Err(failure.into()),
        },
    };
    wait_detached(ctx, &ec2, volume_id, node_id, state)
}

fn publish_context(device: String) -> Params {
    vec![(DEVICE_PATH.to_owned(), device)]
}

/// The first of `names` (in order, starting at a point derived from the volume id) that
/// the instance does not use.
fn pick_device(names: &[String], used: &[String], volume_id: &str) -> Option<String> {
    let digest = Sha256::digest(volume_id.as_bytes());
    let seed = digest.iter().take(8).fold(0u64, |seed, byte| seed << 8 | u64::from(*byte));
    let start = seed.checked_rem(names.len() as u64).unwrap_or(0) as usize;
    names.iter().cycle().skip(start).take(names.len()).find(|name| !used.contains(name)).cloned()
}

fn wait_attached(ctx: &Ctx, ec2: &Ec2, volume_id: &str, node_id: &str, state: &str) -> Result<(), Error> {
    let what = format!("volume {volume_id} to attach to node {node_id}");
    wait::until(ctx, &what, state, || {
        let volume = ec2
            .volume(volume_id)?
            .ok_or_else(|| Error::NotFound(format!("volume {volume_id} disappeared while attaching")))?;
        Ok(match volume.attachment(node_id) {
            Some(attachment) if attachment.state == "attached" => Poll::Ready(()),
            Some(attachment) => Poll::Pending(attachment.state.clone()),
            None => Poll::Pending("not attached yet".into()),
        })
    })
}

fn wait_detached(ctx: &Ctx, ec2: &Ec2, volume_id: &str, node_id: &str, state: &str) -> Result<(), Error> {
    let what = format!("volume {volume_id} to detach from node {node_id}");
    wait::until(ctx, &what, state, || {
        let Some(volume) = ec2.volume(volume_id)? else {
            return Ok(Poll::Ready(()));
        };
        Ok(match volume.attachment(node_id) {
            None => Poll::Ready(()),
            Some(attachment) if attachment.state == "detached" => Poll::Ready(()),
            Some(attachment) => Poll::Pending(attachment.state.clone()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::fake::NODE_ID;
    use crate::fake::{Delays, FAR_NODE, Fixture, NODE_DNS_NAME, OTHER_NODE, ZONE};

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        crate::settings::Settings::for_tests().device_names[range].to_vec()
    }

    fn device(context: &Params) -> &str {
        assert_eq!(context.len(), 1);
        assert_eq!(context[0].0, "devicePath");
        &context[0].1
    }

    #[test]
    fn attach_picks_a_free_name_and_waits_until_attached() {
        let fixture = Fixture::new();
        fixture.ec2.set_delays(Delays { attaching: 2, ..Delays::default() });
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        let context = attach(&fixture.ctx(), &volume, NODE_ID).unwrap();
        let chosen = device(&context).to_owned();
        assert!(names(0..52).contains(&chosen), "{chosen}");
        assert_eq!(
            fixture.ec2.actions(),
            [
                "DescribeVolumes",
                "DescribeInstances",
                "AttachVolume",
                "DescribeVolumes",
                "DescribeVolumes",
                "DescribeVolumes"
            ]
        );
        let form = fixture.ec2.last("AttachVolume");
        assert_eq!(
            (form["VolumeId"].as_str(), form["InstanceId"].as_str(), form["Device"].as_str()),
            (volume.as_str(), NODE_ID, chosen.as_str())
        );
        assert_eq!(fixture.ec2.volume(&volume).unwrap().attachments[0].state, "attached");

        // Idempotent: attached to this node answers its device at once.
        assert_eq!(attach(&fixture.ctx(), &volume, NODE_ID).unwrap(), context);
        assert_eq!(fixture.ec2.count("AttachVolume"), 1);
    }

    #[test]
    fn an_attach_in_progress_is_waited_for() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        fixture.ec2.attach_outside(&volume, NODE_ID, "/dev/xvdbq", "attaching");
        let context = attach(&fixture.ctx(), &volume, NODE_ID).unwrap();
        assert_eq!(device(&context), "/dev/xvdbq");
        assert_eq!(fixture.ec2.count("AttachVolume"), 0);
    }

    #[test]
    fn attached_elsewhere_is_a_failed_precondition() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        fixture.ec2.attach_outside(&volume, OTHER_NODE, "/dev/xvdba", "attached");
        let error = fixture.checked(attach(&fixture.ctx(), &volume, NODE_ID));
        assert!(matches!(&error, Error::FailedPrecondition(m) if m.contains(OTHER_NODE)), "{error:?}");
        assert_eq!(fixture.ec2.count("AttachVolume"), 0);
    }

    #[test]
    fn the_last_free_name_is_found_and_none_free_is_resource_exhausted() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        let mut used = names(0..52);
        let last_free = used.remove(37);
        fixture.ec2.use_devices(NODE_ID, used);
        let context = attach(&fixture.ctx(), &volume, NODE_ID).unwrap();
        assert_eq!(device(&context), last_free);

        let second = fixture.ec2.add_volume(10, ZONE, &[]);
        let error = fixture.checked(attach(&fixture.ctx(), &second, NODE_ID));
        assert!(matches!(&error, Error::ResourceExhausted(m) if m.contains("52 names")), "{error:?}");
    }

    #[test]
    fn device_names_are_spread_by_volume_and_skip_used_ones() {
        let all = names(0..52);
        let first = pick_device(&all, &[], "vol-0123456789abcdef0").unwrap();
        assert_eq!(pick_device(&all, &[], "vol-0123456789abcdef0").unwrap(), first, "deterministic");
        let starts: std::collections::BTreeSet<String> =
            (0..20).map(|i| pick_device(&all, &[], &format!("vol-{i:017x}")).unwrap()).collect();
        assert!(starts.len() > 10, "{starts:?}");
        let next = pick_device(&all, std::slice::from_ref(&first), "vol-0123456789abcdef0").unwrap();
        let index = |name: &str| all.iter().position(|n| n == name).unwrap();
        assert_eq!(index(&next), (index(&first) + 1) % 52, "the next name, wrapping around");
        assert_eq!(pick_device(&all, &all, "vol-0123456789abcdef0"), None);
        assert_eq!(pick_device(&[], &[], "vol-0123456789abcdef0"), None);
    }

    #[test]
    fn the_attach_budget_runs_out_and_the_retry_completes() {
        let fixture = Fixture::new();
        fixture.ec2.set_delays(Delays { attaching: 1000, ..Delays::default() });
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        let error = fixture.checked(attach(&fixture.ctx(), &volume, NODE_ID));
        assert!(matches!(&error, Error::Unavailable(m) if m.contains("still attaching: retry")), "{error:?}");
        fixture.ec2.edit_volume(&volume, |v| v.attachments[0].state = "attached".into());
        let context = attach(&fixture.ctx(), &volume, NODE_ID).unwrap();
        assert_eq!(device(&context), fixture.ec2.volume(&volume).unwrap().attachments[0].device);
        assert_eq!(fixture.ec2.count("AttachVolume"), 1);
    }

    #[test]
    fn attach_errors() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        let far = fixture.checked(attach(&fixture.ctx(), &volume, FAR_NODE));
        assert!(matches!(&far, Error::FailedPrecondition(m) if m.contains("zone")), "{far:?}");
        for (volume_id, node_id) in [
            (volume.as_str(), "node-1"),
            (volume.as_str(), "i-0bbbbbbbbbbbbbbb2"),
            ("vol-0123456789abcdef9", NODE_ID),
            ("disk-1", NODE_ID),
        ] {
            let error = fixture.checked(attach(&fixture.ctx(), volume_id, node_id));
            assert!(matches!(error, Error::NotFound(_)), "{volume_id} {node_id}: {error:?}");
        }
        fixture.ec2.edit_volume(&volume, |v| v.state = "error".into());
        let failed = fixture.checked(attach(&fixture.ctx(), &volume, NODE_ID));
        assert!(matches!(&failed, Error::FailedPrecondition(m) if m.contains("IncorrectState")), "{failed:?}");
        fixture
            .ec2
            .script("AttachVolume", crate::fake::Scripted::Error(400, "AttachmentLimitExceeded", "limit".into()));
        fixture.ec2.edit_volume(&volume, |v| v.state = "available".into());
        let limit = fixture.checked(attach(&fixture.ctx(), &volume, NODE_ID));
        assert!(matches!(limit, Error::ResourceExhausted(_)), "{limit:?}");
    }

    /// Kubernetes node names: a private DNS name is looked up, a resource name and an
    /// instance id are not; the attach and detach go to the instance either way.
    #[test]
    fn node_names_resolve_to_their_instance() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        let context = attach(&fixture.ctx(), &volume, NODE_DNS_NAME).unwrap();
        let (_, form) = fixture.ec2.calls().into_iter().find(|(action, _)| action == "DescribeInstances").unwrap();
        assert_eq!(form["Filter.1.Name"], "private-dns-name");
        assert_eq!(form["Filter.1.Value.1"], NODE_DNS_NAME);
        assert_eq!(fixture.ec2.last("AttachVolume")["InstanceId"], NODE_ID);
        assert_eq!(fixture.ec2.volume(&volume).unwrap().attachments[0].instance, NODE_ID);
        // Published again under another name of the same node: already attached there.
        let resource_name = format!("{NODE_ID}.us-east-1.compute.internal");
        let lookups = fixture.ec2.count("DescribeInstances");
        assert_eq!(attach(&fixture.ctx(), &volume, &resource_name).unwrap(), context);
        assert_eq!(fixture.ec2.count("DescribeInstances"), lookups);
        assert_eq!(fixture.ec2.count("AttachVolume"), 1);

        detach(&fixture.ctx(), &volume, NODE_DNS_NAME).unwrap();
        assert_eq!(fixture.ec2.last("DetachVolume")["InstanceId"], NODE_ID);
        assert!(fixture.ec2.volume(&volume).unwrap().attachments.is_empty());
    }

    #[test]
    fn unknown_and_ambiguous_node_names() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        let unknown = fixture.checked(attach(&fixture.ctx(), &volume, "ip-10-9-9-9.ec2.internal"));
        assert!(
            matches!(&unknown, Error::NotFound(m) if m.contains("ip-10-9-9-9.ec2.internal") && m.contains("private DNS name")),
            "{unknown:?}"
        );
        // Not a host name at all: not sent to EC2.
        let requests = fixture.ec2.requests().len();
        let odd = fixture.checked(attach(&fixture.ctx(), &volume, "Node_1"));
        assert!(matches!(odd, Error::NotFound(_)), "{odd:?}");
        assert_eq!(fixture.ec2.count("DescribeInstances"), 1);
        assert_eq!(fixture.ec2.requests().len(), requests + 1, "{:?}", fixture.ec2.actions());
        // An unknown node has nothing attached: the detach is done.
        detach(&fixture.ctx(), &volume, "ip-10-9-9-9.ec2.internal").unwrap();

        fixture.ec2.add_instance("i-0bbbbbbbbbbbbbbb2", ZONE, Some("shared.internal"));
        fixture.ec2.add_instance("i-0bbbbbbbbbbbbbbb3", ZONE, Some("shared.internal"));
        let ambiguous = fixture.checked(attach(&fixture.ctx(), &volume, "shared.internal"));
        assert!(
            matches!(&ambiguous, Error::NotFound(m) if m.contains("2 EC2 instances") && m.contains("i-0bbbbbbbbbbbbbbb3")),
            "{ambiguous:?}"
        );
        assert!(detach(&fixture.ctx(), &volume, "shared.internal").is_err());
        assert_eq!(fixture.ec2.count("AttachVolume") + fixture.ec2.count("DetachVolume"), 0);
    }

    #[test]
    fn detach_waits_until_detached_and_is_idempotent() {
        let fixture = Fixture::new();
        fixture.ec2.set_delays(Delays { detaching: 2, ..Delays::default() });
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        attach(&fixture.ctx(), &volume, NODE_ID).unwrap();
        detach(&fixture.ctx(), &volume, NODE_ID).unwrap();
        let after = fixture.ec2.volume(&volume).unwrap();
        assert!(after.attachments.is_empty());
        assert_eq!(after.state, "available");
        let form = fixture.ec2.last("DetachVolume");
        assert_eq!((form["VolumeId"].as_str(), form["InstanceId"].as_str()), (volume.as_str(), NODE_ID));

        detach(&fixture.ctx(), &volume, NODE_ID).unwrap();
        detach(&fixture.ctx(), "vol-0123456789abcdef9", NODE_ID).unwrap();
        detach(&fixture.ctx(), "disk-1", NODE_ID).unwrap();
        detach(&fixture.ctx(), &volume, "node-1").unwrap();
        assert_eq!(fixture.ec2.count("DetachVolume"), 1);
    }

    #[test]
    fn a_refused_detach_is_waited_out_not_taken_for_done() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        fixture.ec2.attach_outside(&volume, NODE_ID, "/dev/xvdbq", "attached");
        fixture.ec2.script(
            "DetachVolume",
            crate::fake::Scripted::Error(400, "IncorrectState", "Volume is in the 'in-use' state.".into()),
        );
        let error = fixture.checked(detach(&fixture.ctx(), &volume, NODE_ID));
        assert!(matches!(&error, Error::Unavailable(m) if m.contains("to detach")), "{error:?}");

        // A detach whose answer was lost is retried and then waited for.
        fixture.ec2.script("DetachVolume", crate::fake::Scripted::LostAnswer);
        detach(&fixture.ctx(), &volume, NODE_ID).unwrap();
        assert!(fixture.ec2.volume(&volume).unwrap().attachments.is_empty());
    }

    #[test]
    fn detach_leaves_other_nodes_alone_and_follows_a_detach_in_progress() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        fixture.ec2.attach_outside(&volume, OTHER_NODE, "/dev/xvdba", "attached");
        detach(&fixture.ctx(), &volume, NODE_ID).unwrap();
        assert_eq!(fixture.ec2.volume(&volume).unwrap().attachments.len(), 1);
        fixture.ec2.edit_volume(&volume, |v| v.attachments[0].state = "detaching".into());
        detach(&fixture.ctx(), &volume, OTHER_NODE).unwrap();
        assert!(fixture.ec2.volume(&volume).unwrap().attachments.is_empty());
        assert_eq!(fixture.ec2.count("DetachVolume"), 0);
    }

    #[test]
    fn reattaching_after_a_detach_in_progress() {
        let fixture = Fixture::new();
        let volume = fixture.ec2.add_volume(10, ZONE, &[]);
        fixture.ec2.attach_outside(&volume, NODE_ID, "/dev/xvdbq", "detaching");
        let context = attach(&fixture.ctx(), &volume, NODE_ID).unwrap();
        assert_eq!(fixture.ec2.count("AttachVolume"), 1);
        assert_eq!(fixture.ec2.volume(&volume).unwrap().attachments[0].device, device(&context));
    }
}
