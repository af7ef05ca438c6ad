//! The parts of EC2's responses the backend reads, as types: volumes (with attachments),
//! snapshots, instances (placement and block device names) and volume modifications.
//!
//! Shapes are those of API version 2016-11-15 (the `fixtures/` folder holds one of each);
//! fields the backend does not use are not read.

use roxmltree::Node;

use crate::clock;
use crate::xml::{self, items, parsed, required, text};

/// A page of a Describe call: its entries and AWS's token for the next page.
#[derive(Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    pub size_gib: u64,
    pub zone: String,
    /// creating | available | in-use | deleting | deleted | error
    pub state: String,
    pub volume_type: String,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    pub snapshot_id: Option<String>,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub instance_id: String,
    pub device: String,
    /// attaching | attached | detaching | detached | busy
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub volume_id: String,
    /// pending | completed | error | recoverable | recovering
    pub state: String,
    /// Seconds since the epoch.
    pub start_time: u64,
    pub size_gib: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub zone: String,
    /// Device names of its block device mappings (`/dev/xvda`, …).
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modification {
    /// modifying | optimizing | completed | failed
    pub state: String,
    pub target_size: Option<u64>,
    pub target_type: Option<String>,
    pub target_iops: Option<u32>,
    pub target_throughput: Option<u32>,
    pub status_message: Option<String>,
}

impl Volume {
    /// An `item` of `volumeSet`, or the root of a CreateVolume response (same fields).
    pub fn parse(node: Node) -> Result<Volume, String> {
        Ok(Volume {
            id: required(node, "volumeId")?.to_owned(),
            size_gib: parsed(node, "size")?.ok_or("a volume has no <size>")?,
            zone: required(node, "availabilityZone")?.to_owned(),
            state: required(node, "status")?.to_owned(),
            volume_type: required(node, "volumeType")?.to_owned(),
            iops: parsed(node, "iops")?,
            throughput: parsed(node, "throughput")?,
            snapshot_id: text(node, "snapshotId").map(str::to_owned),
            attachments: items(node, "attachmentSet")
                .map(|item| {
                    Ok(Attachment {
                        instance_id: required(item, "instanceId")?.to_owned(),
                        device: required(item, "device")?.to_owned(),
                        state: required(item, "status")?.to_owned(),
                    })
                })
                .collect::<Result<_, String>>()?,
        })
    }

    /// The attachment to `instance_id`, if any.
    pub fn attachment(&self, instance_id: &str) -> Option<&Attachment> {
        self.attachments.iter().find(|a| a.instance_id == instance_id)
    }
}

impl Snapshot {
    /// An `item` of `snapshotSet`, or the root of a CreateSnapshot response.
    pub fn parse(node: Node) -> Result<Snapshot, String> {
        let start_time = required(node, "startTime")?;
        Ok(Snapshot {
            id: required(node, "snapshotId")?.to_owned(),
            volume_id: required(node, "volumeId")?.to_owned(),
            state: required(node, "status")?.to_owned(),
            start_time: clock::parse_iso8601(start_time)
                .ok_or_else(|| format!("<startTime> is not an ISO-8601 UTC time: {start_time:?}"))?,
            size_gib: parsed(node, "volumeSize")?.ok_or("a snapshot has no <volumeSize>")?,
        })
    }
}

impl Modification {
    fn parse(node: Node) -> Result<Modification, String> {
        Ok(Modification {
            state: required(node, "modificationState")?.to_owned(),
            target_size: parsed(node, "targetSize")?,
            target_type: text(node, "targetVolumeType").map(str::to_owned),
            target_iops: parsed(node, "targetIops")?,
            target_throughput: parsed(node, "targetThroughput")?,
            status_message: text(node, "statusMessage").map(str::to_owned),
        })
    }
}

/// A DescribeVolumes response.
pub fn volumes(root: Node) -> Result<Page<Volume>, String> {
    page(root, "volumeSet", Volume::parse)
}

/// A DescribeSnapshots response.
pub fn snapshots(root: Node) -> Result<Page<Snapshot>, String> {
    page(root, "snapshotSet", Snapshot::parse)
}

/// The instances of a DescribeInstances response, across its reservations.
pub fn instances(root: Node) -> Result<Vec<Instance>, String> {
    items(root, "reservationSet")
        .flat_map(|reservation| items(reservation, "instancesSet"))
        .map(|instance| {
            let placement = xml::child(instance, "placement").ok_or("an instance has no <placement>")?;
            Ok(Instance {
                id: required(instance, "instanceId")?.to_owned(),
                zone: required(placement, "availabilityZone")?.to_owned(),
                devices: items(instance, "blockDeviceMapping")
                    .map(|mapping| required(mapping, "deviceName").map(str::to_owned))
                    .collect::<Result<_, String>>()?,
            })
        })
        .collect()
}

/// The modification a ModifyVolume response started.
pub fn modification(root: Node) -> Result<Modification, String> {
    Modification::parse(xml::child(root, "volumeModification").ok_or("no <volumeModification>")?)
}

/// The modifications of a DescribeVolumesModifications response.
pub fn modifications(root: Node) -> Result<Vec<Modification>, String> {
    items(root, "volumeModificationSet").map(Modification::parse).collect()
}

fn page<T>(root: Node, set: &str, parse: impl Fn(Node) -> Result<T, String>) -> Result<Page<T>, String> {
    Ok(Page {
        items: items(root, set).map(parse).collect::<Result<_, _>>()?,
        next_token: text(root, "nextToken").map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_root<T>(body: &str, read: impl FnOnce(Node) -> T) -> T {
        let doc = xml::parse(body).unwrap();
        read(doc.root_element())
    }

    #[test]
    fn describe_volumes() {
        let page = with_root(include_str!("../fixtures/describe_volumes.xml"), volumes).unwrap();
        assert_eq!(page.next_token.as_deref(), Some("eyJ2IjoiMiIsImMiOiJ0b2tlbiJ9"));
        assert_eq!(
            page.items,
            [
                Volume {
                    id: "vol-1234567890abcdef0".into(),
                    size_gib: 80,
                    zone: "us-east-1a".into(),
                    state: "in-use".into(),
                    volume_type: "io2".into(),
                    iops: Some(4000),
                    throughput: None,
                    snapshot_id: Some("snap-1234567890abcdef0".into()),
                    attachments: vec![Attachment {
                        instance_id: "i-1234567890abcdef0".into(),
                        device: "/dev/xvdba".into(),
                        state: "attached".into(),
                    }],
                },
                Volume {
                    id: "vol-0fedcba9876543210".into(),
                    size_gib: 1,
                    zone: "us-east-1b".into(),
                    state: "available".into(),
                    volume_type: "standard".into(),
                    iops: None,
                    throughput: None,
                    snapshot_id: None,
                    attachments: Vec::new(),
                },
            ]
        );
        assert!(page.items[0].attachment("i-1234567890abcdef0").is_some());
        assert!(page.items[0].attachment("i-0000000000000000f").is_none());
    }

    #[test]
    fn create_volume() {
        let volume = with_root(include_str!("../fixtures/create_volume.xml"), Volume::parse).unwrap();
        assert_eq!(volume.id, "vol-1234567890abcdef0");
        assert_eq!(volume.state, "creating");
        assert_eq!((volume.size_gib, volume.iops, volume.throughput), (80, Some(3000), Some(125)));
        assert_eq!(volume.snapshot_id, None);
    }

    #[test]
    fn snapshots_and_create_snapshot() {
        let page = with_root(include_str!("../fixtures/describe_snapshots.xml"), snapshots).unwrap();
        assert_eq!(page.next_token, None);
        assert_eq!(
            page.items,
            [
                Snapshot {
                    id: "snap-1234567890abcdef0".into(),
                    volume_id: "vol-1234567890abcdef0".into(),
                    state: "pending".into(),
                    start_time: 1_472_496_752,
                    size_gib: 15,
                },
                Snapshot {
                    id: "snap-0fedcba9876543210".into(),
                    volume_id: "vol-0fedcba9876543210".into(),
                    state: "completed".into(),
                    start_time: 1_440_938_160,
                    size_gib: 1,
                },
            ]
        );
        let created = with_root(include_str!("../fixtures/create_snapshot.xml"), Snapshot::parse).unwrap();
        assert_eq!((created.id.as_str(), created.size_gib), ("snap-1234567890abcdef0", 30));
    }

    #[test]
    fn describe_instances() {
        let instances = with_root(include_str!("../fixtures/describe_instances.xml"), instances).unwrap();
        assert_eq!(
            instances,
            [Instance {
                id: "i-1234567890abcdef0".into(),
                zone: "eu-west-1c".into(),
                devices: vec!["/dev/xvda".into(), "/dev/xvdba".into()],
            }]
        );
    }

    #[test]
    fn volume_modifications() {
        let started = with_root(include_str!("../fixtures/modify_volume.xml"), modification).unwrap();
        assert_eq!(
            started,
            Modification {
                state: "modifying".into(),
                target_size: Some(200),
                target_type: Some("gp3".into()),
                target_iops: Some(4000),
                target_throughput: Some(250),
                status_message: None,
            }
        );
        // The fixture starts with a newline before its XML declaration, as moto's does.
        let listed = with_root(include_str!("../fixtures/describe_volumes_modifications.xml"), modifications).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, "failed");
        assert_eq!(
            listed[0].status_message.as_deref(),
            Some("The volume could not be modified to the requested type.")
        );
    }

    #[test]
    fn missing_or_bad_fields_are_errors() {
        let bad_size = "<DescribeVolumesResponse><volumeSet><item><volumeId>vol-1</volumeId><size>x</size>\
                        </item></volumeSet></DescribeVolumesResponse>";
        assert!(with_root(bad_size, volumes).unwrap_err().contains("<size>"));
        let no_zone = "<DescribeVolumesResponse><volumeSet><item><volumeId>vol-1</volumeId><size>1</size>\
                       </item></volumeSet></DescribeVolumesResponse>";
        assert!(with_root(no_zone, volumes).unwrap_err().contains("availabilityZone"));
        let bad_time = "<CreateSnapshotResponse><snapshotId>snap-1</snapshotId><volumeId>vol-1</volumeId>\
                        <status>pending</status><startTime>yesterday</startTime><volumeSize>1</volumeSize>\
                        </CreateSnapshotResponse>";
        assert!(with_root(bad_time, Snapshot::parse).unwrap_err().contains("yesterday"));
        let empty = "<DescribeVolumesResponse/>";
        assert_eq!(with_root(empty, volumes).unwrap().items, []);
    }
}
