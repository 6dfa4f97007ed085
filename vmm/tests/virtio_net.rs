//! virtio-net end to end on the real /dev/kvm: kiln-vmm runs inside a
//! network namespace this test creates, opens (creates) its TAP there, and
//! the firmware's net-echo answers ping, UDP and TCP SYNs sent from that
//! namespace. No traffic leaves the namespace; a Drop guard stops the VMM
//! and deletes the namespace (and with it the TAP) even when the test fails.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{ask, finish, firmware, kvm_available, wait_socket, Guest, VMM};

/// A network namespace of this test, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace, or None (with the reason printed) when this host
    /// cannot make one.
    fn new(tag: &str) -> Option<Netns> {
        let name = format!("kiln-{tag}-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipping: cannot create a network namespace ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// `ip -n <ns> args…`, which must succeed.
    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }

    /// Run `f` on a thread that has entered the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(path).unwrap();
            // SAFETY: setns on an open namespace fd changes only this thread's
            // network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A kiln-vmm process, killed on drop unless it was waited for.
struct Vmm(Option<Child>);

impl Drop for Vmm {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const TAP: &str = "ktap0";
const MAC: &str = "52:54:00:6b:69:01";

/// Start kiln-vmm inside `ns` with one NIC on TAP `TAP` running `cmdline`.
fn spawn_in(ns: &Netns, g: &Guest, cmdline: &str) -> Vmm {
    let c = json!({
        "vcpus": 1,
        "memory_mib": 64,
        "firmware": {"path": firmware(), "cmdline": cmdline},
        "nics": [{"tap": TAP, "mac": MAC, "id": "eth0"}],
        "console": {"log": g.path("console.log")},
        "control_socket": g.sock(),
    });
    let cfg = g.path("vm.json");
    std::fs::write(&cfg, c.to_string()).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, VMM, "--config"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Vmm(Some(child))
}

#[test]
fn net_echo_answers_ping_udp_and_tcp_from_a_test_namespace() {
    if !kvm_available() {
        return;
    }
    let Some(ns) = Netns::new("vnet") else {
        return;
    };
    let g = Guest::new();
    let mut vmm = spawn_in(
        &ns,
        &g,
        "kiln.mode=net-echo ip=10.99.0.2/24 gw=10.99.0.1 tcp=22,8080",
    );
    g.wait_console(
        vmm.0.as_mut().unwrap(),
        "net-echo ready 10.99.0.2/24 52:54:00:6b:69:01\n",
    );
    // kiln-vmm created the TAP in the namespace; give the host side an address.
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", TAP]);
    ns.ip(&["link", "set", TAP, "up"]);

    let ping = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping", "-c", "3", "-W", "5"])
        .arg("10.99.0.2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success(),
        "ping failed: {ping:?}\n{}",
        g.console()
    );
    assert!(text.contains("3 received"), "{text}");

    let (echo, from) = ns.run(|| {
        let s = UdpSocket::bind("10.99.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        let payload: Vec<u8> = (0..1200u32).map(|i| (i * 7) as u8).collect();
        s.send_to(&payload, "10.99.0.2:7777").unwrap();
        let (n, from) = s.recv_from(&mut buf).unwrap();
        (buf[..n] == payload[..], from)
    });
    assert!(echo, "the UDP datagram came back changed");
    assert_eq!(from, "10.99.0.2:7777".parse::<SocketAddr>().unwrap());

    // A listed port completes the handshake (SYN-ACK); another is refused (RST).
    let (open, closed) = ns.run(|| {
        let t = Duration::from_secs(5);
        let open = TcpStream::connect_timeout(&"10.99.0.2:22".parse().unwrap(), t);
        let closed = TcpStream::connect_timeout(&"10.99.0.2:23".parse().unwrap(), t);
        (open.map(|_| ()), closed.map(|_| ()))
    });
    assert!(open.is_ok(), "port 22: {open:?}");
    assert_eq!(
        closed.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );

    wait_socket(&g.sock());
    let answer = ask(&g.sock(), json!({"action": "shutdown"}));
    assert_eq!(answer["ok"], true, "{answer}");
    let out = finish(vmm.0.take().unwrap());
    let console = g.console();
    assert!(out.status.success(), "{out:?}\n{console}");
    assert!(console.contains("net-echo: received "), "{console}");
}

#[test]
fn a_missing_tap_name_or_bad_mac_is_refused_before_boot() {
    let g = Guest::new();
    for (nic, want) in [
        (json!({"tap": "a/b"}), "tap name"),
        (json!({"tap": "t0", "mac": "01:00:5e:00:00:01"}), "mac"),
    ] {
        let c = json!({
            "firmware": {"path": firmware(), "cmdline": "kiln.mode=probe"},
            "nics": [nic],
        });
        let cfg = g.path("bad.json");
        std::fs::write(&cfg, c.to_string()).unwrap();
        let out = Command::new(VMM)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
}
