//! ListPodSandbox and ListContainers answers written as protobuf bytes
//! from the records, without a `cri::` message per item. Pure.
//!
//! kubelet relists pods and containers every second. Building each item
//! (its id, metadata, label and annotation maps cloned out of the record)
//! and then encoding it, to drop it right after, was where the daemon
//! spent these calls: at 250 pods, 0.52 ms of CPU per ListContainers and
//! 0.33 ms per ListPodSandbox, three quarters of it in allocation, clones
//! and prost's encoding (perf, release build). The fields of an item
//! that never change after its creation are encoded once, by prost from
//! `convert`'s message, and kept with the record (its `list_entry`); a
//! list writes that, then the fields that change. Protobuf allows it: a
//! message is the concatenation of its fields in any order, a repeated
//! field the concatenation of its entries.
//!
//! Unit tests decode what is written with k8s-cri's messages and compare
//! it with `convert`'s, so the two ways cannot drift apart.

use super::convert;
use crate::container::ContainerRecord;
use crate::pod::PodSandbox;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, int32, key_len};
use std::ops::Range;

/// Field numbers of CRI v1 (`runtime.v1`, k8s-cri's api.proto).
/// `ListPodSandboxResponse.items` and `ListContainersResponse.containers`.
const LIST_ITEMS: u32 = 1;
/// `PodSandbox.state`.
const POD_STATE: u32 = 3;
/// `Container.image`.
const CONTAINER_IMAGE: u32 = 4;
/// `Container.state`.
const CONTAINER_STATE: u32 = 6;

/// What changes of an item: its state, and for a container its image
/// spec (already encoded).
struct Changing<'a> {
    state: (u32, i32),
    message: Option<(u32, &'a [u8])>,
}

impl Changing<'_> {
    fn encoded_len(&self) -> usize {
        let (tag, state) = self.state;
        // prost leaves a zero (default) enum out; so does this.
        let state_len = if state != 0 {
            int32::encoded_len(tag, &state)
        } else {
            0
        };
        let message_len = self.message.map_or(0, |(tag, m)| {
            key_len(tag) + encoded_len_varint(m.len() as u64) + m.len()
        });
        state_len + message_len
    }

    fn encode(&self, out: &mut Vec<u8>) {
        if let Some((tag, m)) = self.message {
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(m.len() as u64, out);
            out.extend_from_slice(m);
        }
        let (tag, state) = self.state;
        if state != 0 {
            int32::encode(tag, &state, out);
        }
    }
}

/// One entry of a list's repeated field 1: the unchanging fields, then
/// the changing ones.
fn put_item(out: &mut Vec<u8>, fixed: &[u8], changing: Changing<'_>) {
    encode_key(LIST_ITEMS, WireType::LengthDelimited, out);
    encode_varint((fixed.len() + changing.encoded_len()) as u64, out);
    out.extend_from_slice(fixed);
    changing.encode(out);
}

/// Appends `p` as one item of a `ListPodSandboxResponse`.
pub fn put_pod_sandbox(out: &mut Vec<u8>, p: &PodSandbox) {
    let fixed = p.list_entry.get_or_init(|| {
        let mut m = convert::pod_sandbox(p);
        m.state = 0;
        m.encode_to_vec().into()
    });
    let state = (POD_STATE, convert::pod_state(p.state) as i32);
    put_item(
        out,
        fixed,
        Changing {
            state,
            message: None,
        },
    );
}

/// `Container.image` of a container: its `ImageSpec` with the name the
/// image store reports now (`ImageStore::reported_name`), encoded.
pub fn image_spec(c: &ContainerRecord, image_name: &str) -> Vec<u8> {
    convert::image_spec(c, image_name).encode_to_vec()
}

/// A keyed hash of what `Container.image` is made from: the image id, the
/// reference the container was created with and its `ImageSpec`. Equal
/// keys mean equal inputs (a collision needs two images on the node whose
/// 64-bit SipHashes agree under a key drawn at random when the daemon
/// starts, which no name can be chosen to do); equal inputs may get
/// different keys (an `ImageSpec`'s annotations are encoded in their
/// map's order), which only makes the field twice. ListContainers makes
/// the field once per key instead of comparing these strings for every
/// container: those compares, a cache miss each, were a fifth of the
/// call's CPU at 250 pods (perf).
pub fn image_key(c: &ContainerRecord) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    *c.image_key.get_or_init(|| {
        let mut h = KEY.get_or_init(Default::default).build_hasher();
        c.image_id.hash(&mut h);
        c.image_ref.hash(&mut h);
        c.config
            .image
            .as_ref()
            .map(Message::encode_to_vec)
            .hash(&mut h);
        std::sync::Arc::new(h.finish())
    })
}

/// Appends `c` as one item of a `ListContainersResponse`; `image` is
/// [`image_spec`] of it.
pub fn put_container(out: &mut Vec<u8>, c: &ContainerRecord, image: &[u8]) {
    let fixed = c.list_entry.get_or_init(|| {
        let mut m = convert::container(c, "");
        m.image = None;
        m.state = 0;
        m.encode_to_vec().into()
    });
    let changing = Changing {
        state: (CONTAINER_STATE, convert::container_state(c.state)),
        message: Some((CONTAINER_IMAGE, image)),
    };
    put_item(out, fixed, changing);
}

/// A list answer put together from items written out of order (each a
/// range of `items`), in the order of `order`.
pub fn concat_items(items: &[u8], order: impl IntoIterator<Item = Range<usize>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len());
    for r in order {
        out.extend_from_slice(&items[r]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::ContainerState;
    use crate::cri::test_records::{container, map, pod};
    use crate::pod::PodState;
    use k8s_cri::v1 as cri;

    #[test]
    fn pods_decode_as_convert_makes_them_in_every_state() {
        let pods = [
            pod("p1", PodState::Ready, &[("app", "web")]),
            pod("p2", PodState::NotReady, &[]),
            pod("", PodState::NotReady, &[("", "")]),
        ];
        // Twice: the second round writes from the memo made by the first.
        for _ in 0..2 {
            let mut out = Vec::new();
            for p in &pods {
                put_pod_sandbox(&mut out, p);
            }
            let got = cri::ListPodSandboxResponse::decode(&out[..]).expect("decodes");
            let want = cri::ListPodSandboxResponse {
                items: pods.iter().map(convert::pod_sandbox).collect(),
            };
            assert_eq!(got, want);
        }
        assert!(pods.iter().all(|p| p.list_entry.is_set()));
    }

    #[test]
    fn a_state_change_after_the_memo_shows() {
        let mut p = pod("p1", PodState::Ready, &[]);
        put_pod_sandbox(&mut Vec::new(), &p);
        p.state = PodState::NotReady;
        let mut out = Vec::new();
        put_pod_sandbox(&mut out, &p);
        let got = cri::ListPodSandboxResponse::decode(&out[..]).expect("decodes");
        assert_eq!(
            got.items[0].state,
            cri::PodSandboxState::SandboxNotready as i32
        );

        let mut c = container("c1", ContainerState::Created, Default::default());
        let image = image_spec(&c, "busybox:1.29");
        put_container(&mut Vec::new(), &c, &image);
        for state in [
            ContainerState::Running,
            ContainerState::Exited,
            ContainerState::Unknown,
            ContainerState::Created,
        ] {
            c.state = state;
            let mut out = Vec::new();
            put_container(&mut out, &c, &image);
            let got = cri::ListContainersResponse::decode(&out[..]).expect("decodes");
            assert_eq!(got.containers, vec![convert::container(&c, "busybox:1.29")]);
        }
    }

    #[test]
    fn containers_decode_as_convert_makes_them_with_the_reported_image() {
        let spec = cri::ImageSpec {
            image: "sha256:abc".into(),
            annotations: map(&[("k", "v")]),
            user_specified_image: "busybox:1.29".into(),
            runtime_handler: "runc".into(),
        };
        let cs = [
            container("c1", ContainerState::Running, spec.clone()),
            container("c2", ContainerState::Exited, Default::default()),
            container("c3", ContainerState::Created, spec),
        ];
        for name in ["busybox:1.29", "", "registry.example/busybox@sha256:def"] {
            let mut out = Vec::new();
            for c in &cs {
                put_container(&mut out, c, &image_spec(c, name));
            }
            let got = cri::ListContainersResponse::decode(&out[..]).expect("decodes");
            let want = cri::ListContainersResponse {
                containers: cs.iter().map(|c| convert::container(c, name)).collect(),
            };
            assert_eq!(got, want, "image name {name:?}");
        }
    }

    /// Containers whose image field inputs are the same share a key, kept
    /// with each record; any input that differs gives another key.
    #[test]
    fn image_keys_follow_the_image_field_inputs() {
        let spec = cri::ImageSpec {
            image: "sha256:abc".into(),
            user_specified_image: "busybox:1.29".into(),
            ..Default::default()
        };
        let a = container("a", ContainerState::Running, spec.clone());
        let b = container("b", ContainerState::Exited, spec.clone());
        assert_eq!(image_key(&a), image_key(&b));
        assert_eq!(image_key(&a), image_key(&a.clone()), "kept with clones");
        let mut other_id = container("c", ContainerState::Running, spec.clone());
        other_id.image_id = "sha256:abd".into();
        let mut other_ref = container("d", ContainerState::Running, spec.clone());
        other_ref.image_ref = "busybox:1.30".into();
        let other_spec = container(
            "e",
            ContainerState::Running,
            cri::ImageSpec {
                runtime_handler: "runc".into(),
                ..spec
            },
        );
        let none = container("f", ContainerState::Running, Default::default());
        let mut keys: Vec<u64> = [&a, &other_id, &other_ref, &other_spec, &none]
            .iter()
            .map(|c| image_key(c))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 5, "each input its own key");
    }

    #[test]
    fn items_are_put_together_in_the_order_asked() {
        let pods = [
            pod("p1", PodState::Ready, &[]),
            pod("p2", PodState::NotReady, &[("x", "y")]),
        ];
        let mut items = Vec::new();
        let mut ranges = Vec::new();
        for p in &pods {
            let start = items.len();
            put_pod_sandbox(&mut items, p);
            ranges.push(start..items.len());
        }
        ranges.reverse();
        let out = concat_items(&items, ranges);
        let got = cri::ListPodSandboxResponse::decode(&out[..]).expect("decodes");
        let ids: Vec<&str> = got.items.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["p2", "p1"]);
        assert!(concat_items(&items, []).is_empty());
        assert_eq!(
            cri::ListContainersResponse::decode(&[][..]).expect("empty"),
            Default::default()
        );
    }
}
