//! Fuzzes the kubelet log path reader. See `cri.rs` for how to run.
//!
//! Checked: a path is read only into non-empty names taken from its last
//! components (no `/` in them; no `_` in the names the layouts separate with
//! `_`), with a container id of 64 hex digits or a pod uid and restart count,
//! and `apply` sets what was read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::Resource;
use mecha_parsers::kubepath::parse_kube_path;
use mecha_parsers::model::keys;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let Some(kube) = parse_kube_path(&path) else {
        return;
    };
    for name in [&kube.namespace, &kube.pod, &kube.container] {
        assert!(!name.is_empty() && !name.contains('/'));
    }
    assert!(!kube.namespace.contains('_') && !kube.pod.contains('_'));
    match (&kube.container_id, &kube.pod_uid, kube.restart_count) {
        (Some(id), None, None) => {
            assert!(id.len() == 64 && id.bytes().all(|c| c.is_ascii_hexdigit()));
            assert!(!kube.container.contains('_'));
        }
        (None, Some(uid), Some(_)) => assert!(!uid.is_empty() && !uid.contains(['/', '_'])),
        other => panic!("mixed layouts: {other:?}"),
    }
    let mut resource = Resource::default();
    kube.apply(&mut resource);
    assert_eq!(resource.get(keys::NAMESPACE), Some(kube.namespace.as_str()));
    assert_eq!(resource.get(keys::POD), Some(kube.pod.as_str()));
    assert_eq!(resource.get(keys::CONTAINER), Some(kube.container.as_str()));
    assert_eq!(
        resource.get(keys::CONTAINER_ID),
        kube.container_id.as_deref()
    );
    assert_eq!(resource.get(keys::POD_UID), kube.pod_uid.as_deref());
});
