//! The XDP datapath in network namespaces (root only; skipped otherwise):
//! a client namespace and a proxy namespace joined by a veth pair.

mod common;
use common::netns::Netns;
use tensorwire::ingress::xdp::loader::SteeringProgram;

#[test]
fn program_attaches_passes_other_traffic_and_detaches_on_drop() {
    let Some(net) = Netns::new(1) else { return };
    let (ifname, client_ip) = (net.proxy_if.clone(), net.client_ip.clone());
    let attached = Netns::run_in(&net.proxy_ns, move || {
        let p = SteeringProgram::attach(&ifname, 7878, &[]).expect("attach");
        (p.mode, p.ifindex, client_ip)
    });
    // The program is dropped with the thread: check the link went away.
    let (mode, ifindex, _) = attached.join().unwrap();
    assert!(ifindex > 0);
    assert!(mode == "native" || mode == "generic", "mode {mode}");
    assert!(
        !net.xdp_attached(),
        "the bpf_link must detach when the program is dropped"
    );

    // Attached: ping (ARP + ICMP) and TCP still reach the proxy host, and
    // the counters see them pass.
    let (ifname, ns) = (net.proxy_if.clone(), net.proxy_ns.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let h = Netns::run_in(&ns, move || {
        let p = SteeringProgram::attach(&ifname, 7878, &[]).expect("attach");
        tx.send(()).unwrap();
        done_rx.recv().unwrap();
        p.counters().unwrap()
    });
    rx.recv().unwrap();
    assert!(net.xdp_attached());
    let ping = net.in_client(&["ping", "-c", "2", "-W", "2", &net.proxy_ip]);
    assert!(
        ping.status.success(),
        "ping while attached: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let ping6 = net.in_client(&["ping", "-6", "-c", "1", "-W", "2", &net.proxy_ip6]);
    assert!(ping6.status.success(), "ping -6 while attached");
    // A TCP connection to the proxy host.
    let listener = Netns::run_in(&net.proxy_ns, || {
        std::net::TcpListener::bind("0.0.0.0:7879").unwrap()
    });
    let listener = listener.join().unwrap();
    let addr = format!("{}:7879", net.proxy_ip);
    let conn = Netns::run_in(&net.client_ns, move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(
            &addr.parse().unwrap(),
            std::time::Duration::from_secs(3),
        )?;
        s.write_all(b"ping")?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b)?;
        Ok::<_, std::io::Error>(b)
    });
    let (mut s, _) = listener.accept().unwrap();
    {
        use std::io::{Read, Write};
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"pong").unwrap();
    }
    assert_eq!(&conn.join().unwrap().expect("TCP while attached"), b"pong");
    done_tx.send(()).unwrap();
    let c = h.join().unwrap();
    assert!(c.passed >= 2, "ARP/ICMP counted as passed: {c:?}");
    assert_eq!(c.steered, 0);
    assert!(!net.xdp_attached());
}
