//! The pod network as a picture: `podbay net show --format dot|svg` for one node and
//! `podbay lab show --format dot|svg` for a whole lab. Both are drawn from the network
//! report in the daemon's Status info. SVG is written here (no Graphviz needed); DOT is
//! for those who have it.

use std::fmt::Write as _;

use serde::Deserialize;

/// The parts of the network report a picture shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Net {
    pub ready: bool,
    pub bridge: String,
    pub subnet: String,
    pub gateway: String,
    pub node_ip: Option<String>,
    pub pods: Vec<Pod>,
    pub overlay: Option<Overlay>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Pod {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub ip: String,
    pub veth: String,
    pub veth_index: Option<u32>,
    pub host_ports: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Overlay {
    pub device: String,
    pub vni: u32,
    pub local_vtep: String,
    pub vtep_mac: String,
    pub subnet: String,
    pub peers: Vec<Peer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Peer {
    pub node_ip: String,
    pub subnet: String,
    pub vtep_mac: String,
}

/// One node of the picture: a name, and its report (`None`: its daemon did not answer).
pub struct NodeView {
    pub name: String,
    pub net: Option<Net>,
}

/// A lab's underlay: its bridge in the hub namespace, the network, etcd.
pub struct Underlay {
    pub bridge: String,
    pub network: String,
    pub etcd: String,
}

fn pod_label(p: &Pod) -> String {
    let mut s = format!("{}/{}\n{}", p.namespace, p.name, p.ip);
    for hp in &p.host_ports {
        let _ = write!(s, "\nhostPort {hp}");
    }
    s
}

fn link_label(p: &Pod) -> String {
    match p.veth_index {
        Some(i) => format!("{} ↔ eth0@if{i}", p.veth),
        None => format!("{} ↔ eth0", p.veth),
    }
}

fn vxlan_label(o: &Overlay) -> String {
    format!("{} vni {}\nVTEP {}\n{}", o.device, o.vni, o.vtep_mac, o.local_vtep)
}

fn node_title(n: &NodeView) -> String {
    match n.net.as_ref().and_then(|net| net.node_ip.as_deref()) {
        Some(ip) => format!("{} {ip}", n.name),
        None => n.name.clone(),
    }
}

/// A peer node that is itself in the picture (drawn as a tunnel, not as a box).
fn shown(nodes: &[NodeView], peer: &Peer) -> Option<usize> {
    nodes.iter().position(|n| {
        n.net.as_ref().and_then(|net| net.node_ip.as_deref()) == Some(peer.node_ip.as_str())
    })
}

// ---------------------------------------------------------------------------------------
// DOT

fn dot_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Graphviz DOT of the nodes (and the lab's underlay).
pub fn dot(nodes: &[NodeView], underlay: Option<&Underlay>) -> String {
    let mut o = String::from(
        "graph podbay {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n  edge [fontname=\"monospace\", fontsize=9];\n",
    );
    if let Some(u) = underlay {
        let label = format!("{} {}\netcd {}", u.bridge, u.network, u.etcd);
        let _ = writeln!(o, "  underlay [shape=ellipse, label={}];", dot_str(&label));
    }
    for (i, n) in nodes.iter().enumerate() {
        let _ = writeln!(o, "  subgraph cluster_{i} {{\n    label={};", dot_str(&node_title(n)));
        let Some(net) = &n.net else {
            let _ = writeln!(o, "    n{i}_down [label=\"daemon not answering\"];\n  }}");
            continue;
        };
        let bridge = format!("{}\n{} (gateway {})", net.bridge, net.subnet, net.gateway);
        let _ = writeln!(o, "    n{i}_bridge [label={}];", dot_str(&bridge));
        for (j, p) in net.pods.iter().enumerate() {
            let _ =
                writeln!(o, "    n{i}_p{j} [shape=component, label={}];", dot_str(&pod_label(p)));
            let _ =
                writeln!(o, "    n{i}_bridge -- n{i}_p{j} [label={}];", dot_str(&link_label(p)));
        }
        if let Some(ov) = &net.overlay {
            let _ = writeln!(o, "    n{i}_vxlan [label={}];", dot_str(&vxlan_label(ov)));
            let _ = writeln!(o, "    n{i}_bridge -- n{i}_vxlan [style=dotted, label=\"routed\"];");
        }
        let _ = writeln!(o, "  }}");
        if let (Some(_), Some(ip)) = (underlay, &net.node_ip) {
            let end = if net.overlay.is_some() { "vxlan" } else { "bridge" };
            let _ =
                writeln!(o, "  underlay -- n{i}_{end} [label={}];", dot_str(&format!("eth0 {ip}")));
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let Some(ov) = n.net.as_ref().and_then(|net| net.overlay.as_ref()) else { continue };
        for (k, peer) in ov.peers.iter().enumerate() {
            match shown(nodes, peer) {
                // Each tunnel once, from the lower index.
                Some(j) if j > i => {
                    let _ = writeln!(
                        o,
                        "  n{i}_vxlan -- n{j}_vxlan [style=dashed, color=blue, label=\"VXLAN\"];"
                    );
                }
                Some(_) => {}
                None => {
                    let label =
                        format!("node {}\n{}\nVTEP {}", peer.node_ip, peer.subnet, peer.vtep_mac);
                    let _ = writeln!(o, "  n{i}_peer{k} [shape=box3d, label={}];", dot_str(&label));
                    let _ = writeln!(
                        o,
                        "  n{i}_vxlan -- n{i}_peer{k} [style=dashed, color=blue, label=\"VXLAN\"];"
                    );
                }
            }
        }
    }
    o.push_str("}\n");
    o
}

// ---------------------------------------------------------------------------------------
// SVG

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

const POD_W: i32 = 220;
const POD_H: i32 = 64;
const GAP: i32 = 20;
const LINE: i32 = 14;

struct Svg {
    body: String,
}

impl Svg {
    /// A box with lines of text, the first bold.
    fn boxed(&mut self, x: i32, y: i32, w: i32, h: i32, class: &str, lines: &str) {
        let _ = writeln!(
            self.body,
            "<rect class=\"{class}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"6\"/>"
        );
        for (k, line) in lines.lines().enumerate() {
            let weight = if k == 0 { " font-weight=\"bold\"" } else { "" };
            let ty = y + 16 + k as i32 * LINE;
            let _ = writeln!(
                self.body,
                "<text x=\"{}\" y=\"{ty}\" text-anchor=\"middle\"{weight}>{}</text>",
                x + w / 2,
                xml(line)
            );
        }
    }

    /// A line; its label centred on the midpoint.
    fn line(&mut self, from: (i32, i32), to: (i32, i32), class: &str, label: &str) {
        let mid = ((from.0 + to.0) / 2, (from.1 + to.1) / 2 - 3);
        self.line_labelled(from, to, class, label, mid, "middle");
    }

    fn line_labelled(
        &mut self,
        (x1, y1): (i32, i32),
        (x2, y2): (i32, i32),
        class: &str,
        label: &str,
        (lx, ly): (i32, i32),
        anchor: &str,
    ) {
        let _ = writeln!(
            self.body,
            "<line class=\"{class}\" x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\"/>"
        );
        if !label.is_empty() {
            let _ = writeln!(
                self.body,
                "<text class=\"label\" x=\"{lx}\" y=\"{ly}\" text-anchor=\"{anchor}\">{}</text>",
                xml(label)
            );
        }
    }
}

/// The SVG picture: one panel per node (bridge, pods below it on their veths, the VXLAN
/// device), the underlay across the top in a lab, tunnels between VXLAN devices, and peer
/// nodes outside the picture as boxes of their own.
pub fn svg(nodes: &[NodeView], underlay: Option<&Underlay>) -> String {
    let mut s = Svg { body: String::new() };
    let top = if underlay.is_some() { 90 } else { 20 };
    let mut x = GAP;
    let mut vxlan_at: Vec<Option<(i32, i32)>> = Vec::new();
    let mut height = top;
    let mut outside: Vec<(usize, &Peer)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let pods = n.net.as_ref().map_or(0, |net| net.pods.len()) as i32;
        let w = (pods.max(1) * (POD_W + GAP) + GAP).max(2 * POD_W + 3 * GAP);
        let h = 60 + 80 + 60 + POD_H + 30;
        s.boxed(x, top, w, h, "node", &node_title(n));
        let Some(net) = &n.net else {
            s.boxed(x + GAP, top + 60, POD_W, 40, "down", "daemon not answering");
            vxlan_at.push(None);
            x += w + GAP;
            continue;
        };
        let bridge = (x + GAP, top + 60);
        let bridge_label = format!("{}\n{}\ngateway {}", net.bridge, net.subnet, net.gateway);
        s.boxed(bridge.0, bridge.1, POD_W, 56, "bridge", &bridge_label);
        let vx = net.overlay.as_ref().map(|ov| {
            let at = (x + w - GAP - POD_W, top + 60);
            s.boxed(at.0, at.1, POD_W, 56, "vxlan", &vxlan_label(ov));
            s.line((bridge.0 + POD_W, bridge.1 + 28), (at.0, at.1 + 28), "routed", "routed");
            for peer in &ov.peers {
                if shown(nodes, peer).is_none() {
                    outside.push((i, peer));
                }
            }
            (at.0 + POD_W / 2, at.1)
        });
        vxlan_at.push(vx);
        if let (Some(_), Some(ip)) = (underlay, &net.node_ip) {
            let (ux, uy) = vx.unwrap_or((bridge.0 + POD_W / 2, bridge.1));
            let label = format!("eth0 {ip}");
            s.line_labelled((ux, 56), (ux, uy), "underlay", &label, (ux + 4, top + 40), "start");
        }
        let pods_y = top + 60 + 56 + 80;
        for (j, p) in net.pods.iter().enumerate() {
            let px = x + GAP + j as i32 * (POD_W + GAP);
            // The label sits just above the pod it belongs to.
            s.line_labelled(
                (bridge.0 + POD_W / 2, bridge.1 + 56),
                (px + POD_W / 2, pods_y),
                "veth",
                &link_label(p),
                (px + POD_W / 2, pods_y - 5),
                "middle",
            );
            s.boxed(px, pods_y, POD_W, POD_H, "pod", &pod_label(p));
        }
        height = height.max(top + h);
        x += w + GAP;
    }
    // Tunnels between VXLAN devices of nodes in the picture, arched above the panels.
    for (i, n) in nodes.iter().enumerate() {
        let Some(ov) = n.net.as_ref().and_then(|net| net.overlay.as_ref()) else { continue };
        for peer in &ov.peers {
            let Some(j) = shown(nodes, peer).filter(|&j| j > i) else { continue };
            if let (Some(a), Some(b)) = (vxlan_at[i], vxlan_at[j]) {
                let lift = top - 10 - 12 * ((j - i) as i32);
                let _ = writeln!(
                    s.body,
                    "<path class=\"tunnel\" d=\"M {} {} C {} {lift} {} {lift} {} {}\"/>",
                    a.0, a.1, a.0, b.0, b.0, b.1
                );
                let _ = writeln!(
                    s.body,
                    "<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">VXLAN vni {}</text>",
                    (a.0 + b.0) / 2,
                    lift + 20,
                    ov.vni
                );
            }
        }
    }
    // Peers outside the picture, to the right.
    let mut py = top;
    for (i, peer) in outside {
        let label = format!("node {}\n{}\nVTEP {}", peer.node_ip, peer.subnet, peer.vtep_mac);
        s.boxed(x, py, POD_W, 56, "peer", &label);
        if let Some(v) = vxlan_at[i] {
            s.line((v.0 + POD_W / 2, v.1 + 28), (x, py + 28), "tunnel", "VXLAN");
        }
        py += 56 + GAP;
        height = height.max(py);
    }
    let width = x + if py > top { POD_W + GAP } else { 0 };
    if let Some(u) = underlay {
        let label = format!("{} {} · etcd {}", u.bridge, u.network, u.etcd);
        s.boxed(GAP, 20, width - 2 * GAP, 36, "underlay", &label);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" viewBox=\"0 0 {width} {}\" font-family=\"monospace\" font-size=\"11\">",
        height + GAP,
        height + GAP
    );
    out.push_str(
        "<style>rect{stroke:#333;stroke-width:1} .node{fill:#f6f6f6} .bridge{fill:#dbeafe} \
         .vxlan{fill:#ede9fe} .pod{fill:#dcfce7} .peer{fill:#fef3c7} .underlay{fill:#e5e7eb} \
         .down{fill:#fee2e2} line,path{stroke:#555;fill:none} .tunnel{stroke:#2563eb;stroke-dasharray:6 4} \
         .routed{stroke-dasharray:2 3} .label{font-size:9px;fill:#444}</style>\n",
    );
    out.push_str(&s.body);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_nodes() -> Vec<NodeView> {
        let net = |ip: &str, subnet: &str, peer_ip: &str, peer_subnet: &str| Net {
            ready: true,
            bridge: "cni0".into(),
            subnet: subnet.into(),
            gateway: "10.244.1.1".into(),
            node_ip: Some(ip.into()),
            pods: vec![Pod {
                namespace: "default".into(),
                name: "a<b>&\"c\"".into(),
                ip: "10.244.1.2".into(),
                veth: "veth1".into(),
                veth_index: Some(7),
                host_ports: vec!["8080/tcp → 80".into()],
                ..Default::default()
            }],
            overlay: Some(Overlay {
                device: "flannel.1".into(),
                vni: 1,
                peers: vec![Peer {
                    node_ip: peer_ip.into(),
                    subnet: peer_subnet.into(),
                    vtep_mac: "aa:bb".into(),
                }],
                ..Default::default()
            }),
        };
        vec![
            NodeView {
                name: "node1".into(),
                net: Some(net("10.99.0.11", "10.244.1.0/24", "10.99.0.12", "10.244.2.0/24")),
            },
            NodeView {
                name: "node2".into(),
                net: Some(net("10.99.0.12", "10.244.2.0/24", "10.99.0.11", "10.244.1.0/24")),
            },
        ]
    }

    #[test]
    fn dot_quotes_labels_and_draws_each_tunnel_once() {
        let d = dot(&two_nodes(), None);
        assert!(d.contains(r#""default/a<b>&\"c\"\n10.244.1.2\nhostPort 8080/tcp → 80""#), "{d}");
        assert_eq!(d.matches("n0_vxlan -- n1_vxlan").count(), 1, "{d}");
        assert!(!d.contains("n1_vxlan -- n0_vxlan"));
        assert!(d.contains("veth1 ↔ eth0@if7"));
    }

    #[test]
    fn svg_escapes_text() {
        let s = svg(&two_nodes(), None);
        assert!(s.contains("default/a&lt;b&gt;&amp;&quot;c&quot;"), "{s}");
        assert_eq!(s.matches("class=\"tunnel\"").count(), 1);
    }
}
