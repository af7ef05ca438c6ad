//! The Container Storage Interface (CSI) v1.12 gRPC contract for wasmcsi.
//!
//! Container orchestrators talk to storage plugins through CSI. This crate
//! turns our own transcription of the CSI protobuf contract (`csi.proto`)
//! into Rust at build time, so the rest of the workspace shares one set of
//! wire types:
//!
//! - [`v1`]: prost messages and enums, plus tonic servers
//!   (`v1::controller_server::ControllerServer`, …) and clients
//!   (`v1::controller_client::ControllerClient`, …) for the Identity,
//!   Controller, GroupController, SnapshotMetadata and Node services.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.
//! - [`SECRET_FIELDS`]: every field the contract marks as secret.
//!
//! Secrets never leak through `Debug`: messages holding a field marked
//! `[(csi_secret) = true]` get a generated `Debug` impl that prints such
//! fields as `<redacted: N keys>`, so requests can be logged with `{:?}`.
//!
//! The build needs no `protoc`: the schema is compiled by protox, in Rust.
//!
//! ```no_run
//! use csi_proto::v1::{CreateVolumeRequest, controller_client::ControllerClient};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut controller = ControllerClient::connect("http://[::1]:10000").await?;
//! let request = CreateVolumeRequest { name: "pvc-1".into(), ..Default::default() };
//! println!("sending {request:?}"); // secrets would print as <redacted: N keys>
//! let volume = controller.create_volume(request).await?.into_inner().volume;
//! # Ok(())
//! # }
//! ```

/// The `csi.v1` protobuf package.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/csi.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/csi.v1.debug.rs"));
}

/// Encoded `google.protobuf.FileDescriptorSet` of `csi.proto` and its
/// imports, custom options and comments included (e.g. for
/// tonic-reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/csi_descriptor.bin"));

/// Fully-qualified names (`csi.v1.Message.field`) of every field marked
/// `[(csi_secret) = true]`, in declaration order. Their values are
/// redacted from the `Debug` output of the [`v1`] messages.
pub const SECRET_FIELDS: &[&str] = include!(concat!(env!("OUT_DIR"), "/secret_fields.rs"));
