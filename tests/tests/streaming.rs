//! CRI Exec through the streaming server, driven by a client podbay does not own
//! (`spdyexec`, on Docker's SPDY/3.1 library, as kubelet's proxy and crictl are).

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use podbay_tests::ctr::ctr;
use podbay_tests::ctr::{logged_pod, run, sh, sleeper};
use podbay_tests::streaming::{spdyexec, spdyforward};
use podbay_tests::{Client, Node, cri, require_root, run_pod, wait_until, with_network_mode};

async fn exec_url(c: &mut Client, id: &str, cmd: &[&str], stdin: bool) -> String {
    let req = cri::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: false,
        stdin,
        stdout: true,
        stderr: true,
    };
    c.exec(req).await.unwrap().into_inner().url
}

/// Runs spdyexec inside the node (the streaming server listens on the node's loopback).
fn client(node: &Node, url: &str, args: &[&str], input: &[u8]) -> (Output, String) {
    let status = node.dir().join(format!("status-{}", rand_suffix()));
    let mut cmd = node.command(spdyexec().unwrap());
    cmd.args(["-stdout", "-stderr", "-status"]).arg(&status).args(args).arg(url);
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let report = std::fs::read_to_string(&status).unwrap_or_default();
    (out, report)
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_streams_stdio_and_reports_the_exit_code() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "exec");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let id = run(&mut c, &pod, &pc, sleeper("app")).await;

    // stdout, stderr and a non-zero exit, as v4 reports it.
    let url = exec_url(&mut c, &id, &["sh", "-c", "echo out; echo err >&2; exit 3"], false).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let status = c.status(cri::StatusRequest { verbose: true }).await.unwrap().into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    let server = info["streamServer"].as_str().unwrap();
    assert!(url.starts_with(server), "{url} is not on {server}");
    let (out, report) = client(&node, &url, &[], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("protocol: v4.channel.k8s.io") && stderr.contains("err\n"), "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(status["status"], "Failure", "{report}");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");

    // The token was single-use: the same URL again runs nothing.
    let (out, _) = client(&node, &url, &[], b"");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let bad = format!("{}x", &url[..url.len() - 1]);
    let (out, _) = client(&node, &bad, &[], b"");
    assert_eq!(out.status.code(), Some(3));

    // A command killed by a signal: 128 + 9.
    let url = exec_url(&mut c, &id, &["sh", "-c", "kill -9 $$"], false).await;
    let (_, report) = client(&node, &url, &[], b"");
    assert!(report.contains("\"message\":\"137\""), "{report}");

    // 100 MiB through `cat`, the same bytes back (sha256 both ways).
    let big: Vec<u8> =
        (0..100u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let url = exec_url(&mut c, &id, &["cat"], true).await;
    let (out, report) = client(&node, &url, &["-stdin"], &big);
    assert_eq!(out.stdout.len(), big.len(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(sha256(&out.stdout) == sha256(&big), "the bytes came back changed");
    assert!(report.contains("Success"), "{report}");

    // stdin into a file and out again, as `kubectl cp` moves a tar each way.
    let payload: Vec<u8> =
        (0..3 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let url = exec_url(&mut c, &id, &["sh", "-c", "cat > /tmp/blob && echo stored"], true).await;
    let (out, report) = client(&node, &url, &["-stdin"], &payload);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "stored\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("Success"), "{report}");
    let url = exec_url(&mut c, &id, &["cat", "/tmp/blob"], false).await;
    let (out, report) = client(&node, &url, &[], b"");
    assert!(out.stdout == payload, "{} bytes back of {}", out.stdout.len(), payload.len());
    assert!(report.contains("Success"), "{report}");

    // An older protocol: the error stream carries a message only when something failed.
    let url = exec_url(&mut c, &id, &["sh", "-c", "exit 4"], false).await;
    let (out, report) = client(&node, &url, &["-proto", "v2.channel.k8s.io"], b"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("protocol: v2.channel.k8s.io"));
    assert!(report.contains("exit code 4"), "{report}");

    // A client that goes away takes its command with it.
    let url = exec_url(&mut c, &id, &["sleep", "1234"], true).await;
    let mut held = node
        .command(spdyexec().unwrap())
        .args(["-stdin", "-stdout", "-stderr", "-hold", &url])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), || node.sh("ps -eo args | grep -q '^sleep 1234'").is_ok())
        .unwrap();
    // (nsenter forks for the node's PID namespace: the client is its child.)
    node.sh("pkill -9 -f '[s]pdyexec .*-hold'").unwrap();
    let _ = held.wait();
    wait_until(Duration::from_secs(10), || node.sh("ps -eo args | grep -q '^sleep 1234'").is_err())
        .unwrap();
    assert_eq!(sh(&mut c, &id, "echo alive").await, (0, "alive\n".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_with_a_terminal_takes_keys_and_sizes() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "tty");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let id = run(&mut c, &pod, &pc, sleeper("app")).await;
    let tty_url = |c: &mut Client, cmd: &[&str]| {
        let req = cri::ExecRequest {
            container_id: id.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        };
        let mut c = c.clone();
        async move { c.exec(req).await.unwrap().into_inner().url }
    };
    let run_tty = |url: &str, args: &[&str], input: &[u8]| {
        let status = node.dir().join(format!("status-{}", rand_suffix()));
        let mut cmd = node.command(spdyexec().unwrap());
        cmd.args(["-tty", "-stdin", "-stdout", "-status"]).arg(&status).args(args).arg(url);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            std::fs::read_to_string(&status).unwrap_or_default(),
        )
    };

    // A terminal of the size the client sent.
    let url = tty_url(&mut c, &["sh", "-c", "sleep 0.5; tty; stty size"]).await;
    let (out, report) = run_tty(&url, &["-width", "100", "-height", "40"], b"");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("40 100"), "{out:?}");
    assert!(report.contains("Success"), "{report}");

    // Keys go to an interactive shell; its exit code comes back.
    let url = tty_url(&mut c, &["sh"]).await;
    let (out, report) = run_tty(&url, &[], b"echo hi-$((1+2))\nexit 7\n");
    assert!(out.contains("hi-3"), "{out:?}");
    let status: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "7", "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_requests_are_checked() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "checks");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let id = run(&mut c, &pod, &pc, sleeper("app")).await;
    let req = |f: &dyn Fn(&mut cri::ExecRequest)| {
        let mut r = cri::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        };
        f(&mut r);
        r
    };
    for (r, code, word) in [
        (req(&|r| r.container_id = "nope".into()), tonic::Code::NotFound, "nope"),
        (req(&|r| r.cmd.clear()), tonic::Code::InvalidArgument, "cmd"),
        (req(&|r| r.stdout = false), tonic::Code::InvalidArgument, "stdin"),
        (
            req(&|r| {
                r.tty = true;
                r.stderr = true
            }),
            tonic::Code::InvalidArgument,
            "stderr",
        ),
    ] {
        let e = c.exec(r).await.unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(e.message().contains(word), "{}", e.message());
    }
}

async fn forward_url(c: &mut Client, pod: &str, ports: &[i32]) -> String {
    let req = cri::PortForwardRequest { pod_sandbox_id: pod.into(), port: ports.to_vec() };
    c.port_forward(req).await.unwrap().into_inner().url
}

/// Runs spdyforward inside the node; its stdout.
fn forward(node: &Node, url: &str, port: u16, args: &[&str], request: &[u8]) -> String {
    String::from_utf8_lossy(&forward_bytes(node, url, port, args, request)).into_owned()
}

/// What the Go port-forward client printed, as bytes.
fn forward_bytes(node: &Node, url: &str, port: u16, args: &[&str], request: &[u8]) -> Vec<u8> {
    let mut child = node
        .command(spdyforward().unwrap())
        .args(args)
        .arg(url)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(request).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

const GET: &[u8] = b"GET /index.html HTTP/1.0\r\n\r\n";

/// A pod `name` whose busybox httpd serves `text` as /index.html on its localhost:8080
/// only, up and answering; the pod's id and the server container's.
async fn localhost_web(node: &Node, c: &mut Client, name: &str, text: &str) -> (String, String) {
    let pc = logged_pod(node, name);
    let pod = run_pod(c, pc.clone()).await.unwrap();
    let script = format!(
        "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www"
    );
    let id = run(c, &pod, &pc, ctr("web", &["sh", "-c", &script])).await;
    let (code, _) = sh(c, &id, "for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/index.html && exit 0; sleep 0.1; done; exit 1").await;
    assert_eq!(code, 0, "the pod's web server did not come up");
    (pod, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_reaches_the_pods_localhost() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    // A web server on the pod's localhost only: not reachable from the node.
    let (pod, web) = localhost_web(&node, &mut c, "web", "hello-from-pod").await;

    // Twenty connections at once over one session.
    let url = forward_url(&mut c, &pod, &[8080]).await;
    let out = forward(&node, &url, 8080, &["-n", "20"], GET);
    assert_eq!(out.matches("hello-from-pod").count(), 20, "{out}");
    assert!(!out.contains("!!!"), "{out}");
    // 24 MiB of random bytes through four connections at once (many DATA frames each,
    // spliced from the pod's socket): every copy arrives whole and unchanged.
    let made = "dd if=/dev/urandom of=/www/big bs=1M count=24 2>/dev/null && sha256sum /www/big";
    let (code, sum) = sh(&mut c, &web, made).await;
    assert_eq!(code, 0, "{sum}");
    let sum = sum.split_whitespace().next().unwrap().to_owned();
    let url = forward_url(&mut c, &pod, &[8080]).await;
    let out = forward_bytes(&node, &url, 8080, &["-n", "4"], b"GET /big HTTP/1.0\r\n\r\n");
    let mut rest = &out[..];
    for i in 0..4 {
        let mark = format!("=== {i} ===\n");
        assert!(rest.starts_with(mark.as_bytes()), "answer {i} missing");
        let answer = &rest[mark.len()..];
        let body = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let end = (body + (24 << 20)).min(answer.len());
        let got: String = sha256(&answer[body..end]).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, sum, "answer {i}: {} bytes", end - body);
        rest = &answer[end..];
    }
    assert!(rest.is_empty(), "more than four answers");
    // In one session, connections to a port nothing listens on fail alone: the others
    // still get through.
    let url = forward_url(&mut c, &pod, &[]).await;
    let out = forward(&node, &url, 8080, &["-n", "6", "-ports", "8080,8081"], GET);
    assert_eq!(out.matches("hello-from-pod").count(), 3, "{out}");
    assert_eq!(out.matches("!!! error forwarding port 8081").count(), 3, "{out}");
    // Clients that send no requestID (streams paired by id).
    let url = forward_url(&mut c, &pod, &[]).await;
    let out = forward(&node, &url, 8080, &["-n", "3", "-norequestid"], GET);
    assert_eq!(out.matches("hello-from-pod").count(), 3, "{out}");

    // A port nothing listens on, and one the request did not name: said on the error
    // stream of that connection.
    let url = forward_url(&mut c, &pod, &[]).await;
    let out = forward(&node, &url, 8081, &[], GET);
    assert!(
        out.contains("!!! error forwarding port 8081") && out.contains("failed to connect"),
        "{out}"
    );
    let url = forward_url(&mut c, &pod, &[8080]).await;
    let out = forward(&node, &url, 9999, &[], GET);
    assert!(out.contains("!!! port 9999 is not among"), "{out}");

    // Bad requests.
    let e = c
        .port_forward(cri::PortForwardRequest { pod_sandbox_id: pod.clone(), port: vec![70000] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    let e = c
        .port_forward(cri::PortForwardRequest { pod_sandbox_id: "nope".into(), port: vec![] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_to_a_host_network_pod_reaches_the_nodes_localhost() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let mut listener = node
        .command("socat")
        .args(["TCP-LISTEN:9090,bind=127.0.0.1,fork,reuseaddr", "SYSTEM:echo node-side"])
        .spawn()
        .unwrap();
    let pc = with_network_mode(logged_pod(&node, "hostnet"), cri::NamespaceMode::Node);
    let pod = run_pod(&mut c, pc).await.unwrap();
    wait_until(Duration::from_secs(10), || {
        node.sh("nc -z 127.0.0.1 9090 2>/dev/null || socat -u /dev/null TCP:127.0.0.1:9090").is_ok()
    })
    .unwrap();
    let url = forward_url(&mut c, &pod, &[9090]).await;
    let out = forward(&node, &url, 9090, &[], b"");
    let _ = node.sh("pkill -f '[T]CP-LISTEN:9090'");
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(out.contains("node-side"), "{out}");
}

async fn attach_url(c: &mut Client, id: &str, stdin: bool, tty: bool) -> String {
    let req =
        cri::AttachRequest { container_id: id.into(), stdin, tty, stdout: true, stderr: !tty };
    c.attach(req).await.unwrap().into_inner().url
}

/// A client whose stdout lines arrive on a channel as they come.
struct Live {
    lines: std::sync::mpsc::Receiver<String>,
    child: std::process::Child,
    /// The client's stderr, for the message when a line does not come.
    errors: std::path::PathBuf,
}

impl Live {
    fn start(node: &Node, args: &[&str], input: &[u8]) -> Live {
        let errors = tempfile::NamedTempFile::new_in(node.dir()).unwrap().into_temp_path();
        let errors = errors.keep().unwrap();
        let mut child = node
            .command(spdyexec().unwrap())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&errors).unwrap())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Live { lines, child, errors }
    }

    fn expect(&self, want: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(want) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let errors = std::fs::read_to_string(&self.errors).unwrap_or_default();
        panic!("{want:?} never came; the client said: {errors}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_shares_output_and_closes_stdin_once() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "attach");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let mut config = ctr(
        "app",
        &[
            "sh",
            "-c",
            "while :; do echo tick; sleep 0.2; done & read a; kill $!; echo got-$a; \
             cat > /dev/null; echo eof-seen; sleep 3600",
        ],
    );
    config.stdin = true;
    config.stdin_once = true;
    let id = run(&mut c, &pod, &pc, config).await;

    // An observer, then an attacher that types a line and goes away.
    let url = attach_url(&mut c, &id, false, false).await;
    let observer = Live::start(&node, &["-stdout", "-stderr", &url], b"");
    // Output reaches an attacher from its attach on: the observer is there once it sees
    // the container's ticks.
    observer.expect("tick");
    let url = attach_url(&mut c, &id, true, false).await;
    let typist = Live::start(&node, &["-stdin", "-stdout", "-stderr", &url], b"one\n");
    typist.expect("got-one");
    observer.expect("got-one");
    node.sh(&format!("pkill -9 -f '[s]pdyexec -stdin -stdout -stderr {url}'")).unwrap();
    // stdin_once: its going closed the container's stdin; the container runs on.
    observer.expect("eof-seen");
    let listed = podbay_tests::ctr::status(&mut c, &id).await.0;
    assert_eq!(listed.state, cri::ContainerState::ContainerRunning as i32);
    let _ = node.sh("pkill -9 -f '[s]pdyexec'");
    let (mut a, mut b) = (observer.child, typist.child);
    let _ = (a.wait(), b.wait());

    // Attach with stdin to a container without it is refused.
    let plain = run(&mut c, &pod, &pc, sleeper("plain")).await;
    let e = c
        .attach(cri::AttachRequest {
            container_id: plain,
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_a_terminal_container() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "tty");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let mut config = ctr("shell", &["sh"]);
    config.stdin = true;
    config.tty = true;
    let id = run(&mut c, &pod, &pc, config).await;
    let url = attach_url(&mut c, &id, true, true).await;
    let status = node.dir().join("attach-status");
    let out = node
        .command(spdyexec().unwrap())
        .args(["-tty", "-stdin", "-stdout", "-width", "120", "-height", "50", "-status"])
        .arg(&status)
        .arg(&url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            std::thread::sleep(Duration::from_millis(300));
            child.stdin.take().unwrap().write_all(b"stty size; exit 3\n")?;
            child.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("50 120"), "{text:?} {}", String::from_utf8_lossy(&out.stderr));
    // The container's own exit ends the attach; its status says so.
    let st = podbay_tests::ctr::wait_exited(&mut c, &id).await;
    assert_eq!(st.exit_code, 3);
}

/// Runs tests/py/wsexec.py inside the node; its JSON report.
fn ws_client(node: &Node, url: &str, protocol: &str, input: Option<&[u8]>) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/wsexec.py");
    // Debian's python3, which python3-websocket installs into.
    let mut cmd = node.command("/usr/bin/python3");
    cmd.arg(&script).arg(url).arg(protocol);
    if let Some(data) = input {
        let file = node.dir().join(format!("ws-input-{}", rand_suffix()));
        std::fs::write(&file, data).unwrap();
        cmd.arg(file);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn b64(v: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_websocket() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "ws");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let id = run(&mut c, &pod, &pc, sleeper("app")).await;

    // v5: stdin closes with [255, 0]; bytes come back as they went; the exit code.
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let url = exec_url(&mut c, &id, &["sh", "-c", "cat; echo done >&2; exit 2"], true).await;
    let r = ws_client(&node, &url, "v5.channel.k8s.io", Some(&payload));
    assert_eq!(r["protocol"], "v5.channel.k8s.io");
    assert!(b64(&r["stdout"]) == payload, "{} bytes back", b64(&r["stdout"]).len());
    assert_eq!(b64(&r["stderr"]), b"done\n");
    let status: serde_json::Value = serde_json::from_str(r["error"].as_str().unwrap()).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "2", "{status}");

    // v4 and the base64 text protocol.
    let url = exec_url(&mut c, &id, &["echo", "hi"], false).await;
    let r = ws_client(&node, &url, "v4.channel.k8s.io", None);
    assert_eq!(b64(&r["stdout"]), b"hi\n");
    assert!(r["error"].as_str().unwrap().contains("Success"), "{r}");
    let url = exec_url(&mut c, &id, &["echo", "text"], false).await;
    let r = ws_client(&node, &url, "base64.channel.k8s.io", None);
    assert_eq!(r["protocol"], "base64.channel.k8s.io");
    assert_eq!(b64(&r["stdout"]), b"text\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_streaming_connection_is_closed() {
    require_root!();
    let mut node = Node::empty().unwrap();
    node.set_config("[stream]\nidle_timeout_seconds = 1\n");
    node.start_daemon().unwrap();
    node.import_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "idle");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let id = run(&mut c, &pod, &pc, sleeper("app")).await;
    // A client that opens its streams and then says nothing.
    let url = exec_url(&mut c, &id, &["sleep", "4321"], true).await;
    let mut held = node
        .command(spdyexec().unwrap())
        .args(["-stdin", "-stdout", "-stderr", "-hold", &url])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), || node.sh("ps -eo args | grep -q '^sleep 4321'").is_ok())
        .unwrap();
    // After the idle timeout the connection is closed, and the command with it.
    wait_until(Duration::from_secs(10), || node.sh("ps -eo args | grep -q '^sleep 4321'").is_err())
        .unwrap();
    let _ = node.sh("pkill -9 -f '[s]pdyexec'");
    let _ = held.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_streaming_server_speaks_tls_when_given_a_certificate() {
    require_root!();
    let mut node = Node::empty().unwrap();
    let (cert, key) = (node.dir().join("stream.crt"), node.dir().join("stream.key"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "1", "-subj", "/CN=podbay-stream"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    node.set_config(&format!(
        "[stream]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    ));
    node.start_daemon().unwrap();
    node.import_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "tls");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let id = run(&mut c, &pod, &pc, sleeper("app")).await;
    let url = exec_url(&mut c, &id, &["sh", "-c", "echo over-tls"], false).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = cert.to_string_lossy().into_owned();
    let (out, report) = client(&node, &url, &["-ca", &ca], b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "over-tls\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("Success"), "{report}");
    // A plain-text client gets nowhere.
    let url = exec_url(&mut c, &id, &["true"], false).await;
    let plain = url.replacen("https://", "http://", 1);
    let (out, _) = client(&node, &plain, &[], b"");
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_into_a_stopped_container_and_an_expired_token_run_nothing() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "late");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let id = run(&mut c, &pod, &pc, sleeper("app")).await;
    let url = exec_url(&mut c, &id, &["touch", "/tmp/ran"], false).await;
    let quick = run(&mut c, &pod, &pc, ctr("quick", &["true"])).await;
    podbay_tests::ctr::wait_exited(&mut c, &quick).await;
    let req = cri::ExecRequest {
        container_id: quick,
        cmd: vec!["true".into()],
        stdout: true,
        ..Default::default()
    };
    let e = c.exec(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
    // The URL is valid for a minute.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let (out, _) = client(&node, &url, &[], b"");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    assert_eq!(sh(&mut c, &id, "test -e /tmp/ran; echo $?").await, (0, "1\n".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_streams_exec_and_forwards_ports() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let pc = logged_pod(&node, "cli");
    let pod = run_pod(&mut c, pc.clone()).await.unwrap();
    let server = ctr(
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
        ],
    );
    let id = run(&mut c, &pod, &pc, server).await;
    let podbay = |args: &[&str]| {
        let mut cmd = node.command(podbay_tests::podbay_bin());
        cmd.arg("--endpoint").arg(node.socket()).args(args);
        cmd
    };

    // exec -i: stdin in, stdout and stderr apart, the exit code.
    let mut child = podbay(&["exec", "-i", &id, "--", "sh", "-c", "cat; echo err >&2; exit 4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"typed\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "typed\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // port-forward: a local port on the node reaches the pod's localhost.
    let mut fwd = podbay(&["port-forward", &pod, "18080:8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(fwd.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains("Forwarding from 127.0.0.1:18080 -> 8080"), "{first}");
    for _ in 0..3 {
        let got = node.sh("busybox wget -qO- http://127.0.0.1:18080/index.html").unwrap();
        assert_eq!(got, "served\n");
    }
    let _ = node.sh("pkill -f '[p]ort-forward'");
    let _ = fwd.wait();
}

/// Runs tests/py/wsforward.py inside the node; its JSON report.
fn ws_forward(node: &Node, url: &str, protocol: &str, input: &[u8]) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/wsforward.py");
    let file = node.dir().join(format!("wsf-input-{}", rand_suffix()));
    std::fs::write(&file, input).unwrap();
    let out =
        node.command("/usr/bin/python3").arg(&script).arg(url).arg(protocol).arg(file).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_over_websocket() {
    require_root!();
    let node = Node::with_busybox().unwrap();
    let mut c = node.client().await.unwrap();
    let (pod, _) = localhost_web(&node, &mut c, "wsweb", "hello-over-ws").await;

    // Binary v4, base64 v4, and no subprotocol at all: the port first on both channels,
    // then the pod's answer on the data channel.
    for protocol in ["v4.channel.k8s.io", "v4.base64.channel.k8s.io", "none"] {
        let url = forward_url(&mut c, &pod, &[8080]).await;
        let r = ws_forward(&node, &format!("{url}?port=8080"), protocol, GET);
        assert_eq!(r["prefixes"]["0"], 8080, "{protocol}: {r}");
        assert_eq!(r["prefixes"]["1"], 8080, "{protocol}: {r}");
        let body = b64(&r["data"]["0"]);
        assert!(String::from_utf8_lossy(&body).contains("hello-over-ws"), "{protocol}: {r}");
        if protocol != "none" {
            assert_eq!(r["protocol"], protocol);
        }
    }
    // Two ports in one connection: the one nothing listens on reports on its error
    // channel (3); the first still answers.
    let url = forward_url(&mut c, &pod, &[]).await;
    let r = ws_forward(&node, &format!("{url}?port=8080&port=8081"), "v4.channel.k8s.io", GET);
    assert_eq!(r["prefixes"]["2"], 8081, "{r}");
    let error = String::from_utf8_lossy(&b64(&r["data"]["3"])).into_owned();
    assert!(error.contains("failed to connect"), "{r}");
    assert!(String::from_utf8_lossy(&b64(&r["data"]["0"])).contains("hello-over-ws"), "{r}");
    // A port the request did not name, and no port at all: refused before the upgrade.
    let url = forward_url(&mut c, &pod, &[8080]).await;
    let r = ws_forward(&node, &format!("{url}?port=22"), "v4.channel.k8s.io", GET);
    assert_eq!(r["status"], 400, "{r}");
    let url = forward_url(&mut c, &pod, &[8080]).await;
    let r = ws_forward(&node, &url, "v4.channel.k8s.io", GET);
    assert_eq!(r["status"], 400, "{r}");
}
