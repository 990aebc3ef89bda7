//! Well-formed inputs for each target, in the shapes real peers send: kubelet's pod and
//! container requests, a layer as registries serve it, the default config, supervisor
//! calls, flannel's records.

use std::collections::HashMap;
use std::io::Write;

use k8s_cri::v1 as cri;
use podbay::config::Config;
use podbay_proto::frame;
use podbay_proto::supervisor::v1 as sv;
use prost::Message;

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn pod_config(name: &str, host_network: bool) -> cri::PodSandboxConfig {
    let mode = if host_network { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: "0b1c5a4e-2f1d-4c59-9d3e-6f7a8b9c0d1e".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: if host_network { String::new() } else { name.into() },
        log_directory: format!("/var/log/pods/default_{name}_0b1c5a4e"),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: vec![cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        }],
        labels: labels(&[("app", name), ("io.kubernetes.pod.name", name)]),
        annotations: labels(&[("kubernetes.io/config.source", "api")]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/burstable/pod0b1c5a4e".into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: mode as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: mode as i32,
                    ..Default::default()
                }),
                privileged: host_network,
                ..Default::default()
            }),
            sysctls: if host_network {
                HashMap::new()
            } else {
                labels(&[("net.ipv4.ip_unprivileged_port_start", "0")])
            },
            ..Default::default()
        }),
        windows: None,
    }
}

pub fn cri_pod() -> Vec<Vec<u8>> {
    [("web", false), ("kube-proxy", true)]
        .into_iter()
        .map(|(name, host)| {
            let req = cri::RunPodSandboxRequest {
                config: Some(pod_config(name, host)),
                runtime_handler: String::new(),
            };
            req.encode_to_vec()
        })
        .collect()
}

fn container_request(privileged: bool) -> cri::CreateContainerRequest {
    let mount = |c: &str, h: &str, ro: bool| cri::Mount {
        container_path: c.into(),
        host_path: h.into(),
        readonly: ro,
        ..Default::default()
    };
    let config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "app".into(), attempt: 1 }),
        image: Some(cri::ImageSpec {
            image: "docker.io/library/busybox:latest".into(),
            user_specified_image: "busybox".into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["sleep 3600".into()],
        working_dir: "/work".into(),
        envs: vec![cri::KeyValue { key: "POD_NAME".into(), value: "web".into() }],
        mounts: vec![
            mount("/etc/hosts", "/var/lib/kubelet/pods/x/etc-hosts", false),
            mount("/dev/termination-log", "/var/lib/kubelet/pods/x/containers/app/1", false),
            mount("/var/run/secrets/kubernetes.io/serviceaccount", "/var/lib/kubelet/sa", true),
        ],
        labels: labels(&[("io.kubernetes.container.name", "app")]),
        annotations: labels(&[("io.kubernetes.container.restartCount", "1")]),
        log_path: "app/1.log".into(),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 102,
                memory_limit_in_bytes: 128 << 20,
                oom_score_adj: 999,
                hugepage_limits: vec![cri::HugepageLimit { page_size: "2MB".into(), limit: 0 }],
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: vec!["NET_ADMIN".into()],
                    drop_capabilities: vec!["MKNOD".into()],
                    ..Default::default()
                }),
                privileged,
                run_as_user: Some(cri::Int64Value { value: 1000 }),
                supplemental_groups: vec![2000],
                masked_paths: vec!["/proc/kcore".into()],
                readonly_paths: vec!["/proc/sys".into()],
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    cri::CreateContainerRequest {
        pod_sandbox_id: "a".repeat(64),
        config: Some(config),
        sandbox_config: Some(pod_config("web", false)),
    }
}

const IMAGE_CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"User":"app:staff","Env":["PATH=/usr/bin:/bin"],"Entrypoint":["/bin/sh"],"Cmd":["-c","true"],"WorkingDir":"/srv","StopSignal":"SIGQUIT"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\nstaff:x:50:app\napp:x:1000:\n";

pub fn cri_container() -> Vec<Vec<u8>> {
    let image = [IMAGE_CONFIG, PASSWD, GROUP].join("\0");
    [false, true]
        .into_iter()
        .map(|privileged| {
            crate::join_head(&container_request(privileged).encode_to_vec(), image.as_bytes())
        })
        .collect()
}

/// A small layer: a dir, a file, a symlink, a hard link, a whiteout and an opaque dir.
fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, link: Option<&str>, body: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_size(body.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        if let Some(link) = link {
            h.set_link_name(link).expect("link name");
        }
        b.append_data(&mut h, path, body).expect("tar entry");
    };
    add("etc", tar::EntryType::Directory, None, b"");
    add("etc/motd", tar::EntryType::Regular, None, b"hello\n");
    add("etc/issue", tar::EntryType::Symlink, Some("motd"), b"");
    add("etc/motd.1", tar::EntryType::Link, Some("etc/motd"), b"");
    add("etc/.wh.old", tar::EntryType::Regular, None, b"");
    add("var/.wh..wh..opq", tar::EntryType::Regular, None, b"");
    b.into_inner().expect("tar")
}

pub fn layer() -> Vec<Vec<u8>> {
    let tar = layer_tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    vec![tar, gz.finish().expect("gzip")]
}

pub fn config() -> Vec<Vec<u8>> {
    let custom = r#"
root = "/var/lib/podbay"
[log]
level = "info"
[image]
max_layer_bytes = 1073741824
[network]
cluster_cidr = "10.244.0.0/16"
subnet_len = 24
[registries."registry.local:5000"]
plain_http = true
"#;
    vec![Config::default_toml().into_bytes(), custom.as_bytes().to_vec()]
}

/// A stream of frames behind the byte that picks the message type.
fn stream<M: Message>(which: u8, msgs: &[M]) -> Vec<u8> {
    let mut out = vec![which];
    for m in msgs {
        frame::write(&mut out, m).expect("frame");
    }
    out
}

pub fn frames() -> Vec<Vec<u8>> {
    let request = |kind| sv::Request { kind: Some(kind) };
    let response = |kind| sv::Response { kind: Some(kind) };
    let create = sv::request::Kind::CreateContainer(sv::CreateContainerRequest {
        id: "c".repeat(64),
        ..Default::default()
    });
    let states = sv::response::Kind::ContainerStates(sv::ContainerStatesResponse {
        containers: vec![sv::ContainerState { id: "c".repeat(64), ..Default::default() }],
    });
    let failure = sv::response::Kind::Failure(sv::Failure {
        field: "config.mounts[0]".into(),
        message: "no such file".into(),
        ..Default::default()
    });
    let helper = sv::HelperReply { result: Some(sv::helper_reply::Result::Pid(42)) };
    vec![
        stream(0, &[request(sv::request::Kind::Ping(sv::PingRequest {})), request(create)]),
        stream(1, &[response(states), response(failure)]),
        stream(2, &[helper]),
        stream(3, &[sv::Started::default()]),
    ]
}

pub fn lease() -> Vec<Vec<u8>> {
    let attrs = r#"{"PublicIP":"192.168.50.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"5a:3c:1e:00:11:22"}}"#;
    let doc = r#"{"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.2.0","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}"#;
    vec![format!("\x0010.244.3.0-24\n{attrs}").into_bytes(), format!("\x01{doc}").into_bytes()]
}
