//! Fuzzes the kubelet log path reader. See `cri.rs` for how to run.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mecha_parsers::Resource;
use mecha_parsers::kubepath::parse_kube_path;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    if let Some(kube) = parse_kube_path(&path) {
        let mut resource = Resource::default();
        kube.apply(&mut resource);
        assert!(!kube.namespace.is_empty() && !kube.pod.is_empty() && !kube.container.is_empty());
    }
});
