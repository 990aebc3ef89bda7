//! `podbay lab status`: each node, its daemon and its overlay, as a table or JSON.

use super::state::load;

/// `podbay lab status`.
pub async fn status(name: &str, json: bool) -> anyhow::Result<()> {
    let state = load(name)?;
    let mut rows = Vec::new();
    for n in &state.nodes {
        let (ready, net) = if n.holder.alive() {
            match crate::cli::status_info(&n.socket()).await {
                Ok((status, info)) => (
                    status.is_some_and(|s| {
                        s.conditions.iter().any(|c| c.r#type == "NetworkReady" && c.status)
                    }),
                    info["network"].clone(),
                ),
                Err(_) => (false, serde_json::Value::Null),
            }
        } else {
            (false, serde_json::Value::Null)
        };
        rows.push(serde_json::json!({
            "node": n.name,
            "ip": n.ip,
            "running": n.holder.alive(),
            "networkReady": ready,
            "subnet": net["subnet"],
            "vtepMac": net["overlay"]["vtepMac"],
            "peers": net["overlay"]["peers"].as_array().map(|p| p.len()),
            "socket": n.socket(),
            "reason": net["reason"],
        }));
    }
    if json {
        let out = serde_json::json!({
            "name": state.name, "underlay": state.underlay, "etcd": state.etcd,
            "hubRunning": state.hub.alive(), "nodes": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!(
        "lab {}: underlay {} on lab0, etcd {} ({})",
        state.name,
        state.underlay,
        state.etcd,
        if state.hub.alive() { "running" } else { "DOWN" }
    );
    println!(
        "{:<8} {:<14} {:<10} {:<16} {:<18} {:<6} SOCKET",
        "NODE", "IP", "STATE", "SUBNET", "VTEP MAC", "PEERS"
    );
    for r in rows {
        let st = match (r["running"] == true, r["networkReady"] == true) {
            (false, _) => "down",
            (true, true) => "ready",
            (true, false) => "not-ready",
        };
        println!(
            "{:<8} {:<14} {:<10} {:<16} {:<18} {:<6} {}",
            s(&r["node"]),
            s(&r["ip"]),
            st,
            s(&r["subnet"]),
            s(&r["vtepMac"]),
            s(&r["peers"]),
            s(&r["socket"])
        );
    }
    Ok(())
}

/// `podbay lab show`: the lab as a picture (dot or svg) from each node's network report.
pub async fn show(name: &str, format: &str) -> anyhow::Result<()> {
    use crate::cli::topology;
    if !matches!(format, "dot" | "svg") {
        anyhow::bail!("unknown format {format:?} (dot or svg)");
    }
    let state = load(name)?;
    let mut nodes = Vec::new();
    for n in &state.nodes {
        let net = match n.holder.alive() {
            true => match crate::cli::status_info(&n.socket()).await {
                Ok((_, info)) => serde_json::from_value(info["network"].clone()).ok(),
                Err(_) => None,
            },
            false => None,
        };
        nodes.push(topology::NodeView { name: n.name.clone(), net });
    }
    let underlay = topology::Underlay {
        bridge: "lab0".into(),
        network: state.underlay.to_string(),
        etcd: state.etcd.clone(),
    };
    let picture = match format {
        "dot" => topology::dot(&nodes, Some(&underlay)),
        _ => topology::svg(&nodes, Some(&underlay)),
    };
    print!("{picture}");
    Ok(())
}
