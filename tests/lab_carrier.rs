//! How D-Bus reaches a lab host over ssh: a forwarded stream to the bus
//! socket by default (nothing runs on the host for it), the bridge when the
//! server refuses stream forwarding. Asserted on the host itself.

mod common;

use common::{lab, Lab};
use drover::carrier;
use drover::inventory::Inventory;
use drover::systemd::StateRead;
use drover::unit::UnitName;

/// Processes named systemd-stdio-bridge on the host right now.
fn bridges(lab: &Lab, host: &str) -> usize {
    // -f: the kernel truncates the process name to 15 characters.
    lab.ssh(host, "pgrep -c -f ^systemd-stdio-bridge || true")
        .trim()
        .parse()
        .expect("a count")
}

async fn read_web(session: &carrier::Session) -> String {
    let web = UnitName::parse("demo-web").expect("unit");
    session
        .systemd()
        .unit_state(&web, StateRead::default())
        .await
        .expect("read demo-web")
        .active_state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_reaches_the_bus_without_a_process_on_the_host() {
    let Some(lab) = lab() else { return };
    let _guard = lab.lock();
    let inv = Inventory::load(&lab.inventory).expect("inventory");
    let host = inv.hosts[0].clone();
    let session = carrier::connect(&host).await.expect("connect");
    let want = lab.show(&host.name, "demo-web.service")["ActiveState"].clone();
    assert_eq!(read_web(&session).await, want);
    assert_eq!(bridges(&lab, &host.name), 0, "no bridge while connected");
    session.close().await;
}

/// Restores the host's sshd configuration however the test ends.
struct NoForwarding<'a> {
    lab: &'a Lab,
    host: String,
}

const DROP_IN: &str = "/etc/ssh/sshd_config.d/90-drover-test-no-forwarding.conf";

impl<'a> NoForwarding<'a> {
    fn new(lab: &'a Lab, host: &str) -> Self {
        lab.ssh(
            host,
            &format!("echo 'AllowStreamLocalForwarding no' > {DROP_IN} && systemctl reload ssh"),
        );
        NoForwarding {
            lab,
            host: host.to_string(),
        }
    }
}

impl Drop for NoForwarding<'_> {
    fn drop(&mut self) {
        self.lab.ssh(
            &self.host,
            &format!("rm -f {DROP_IN} && systemctl reload ssh"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_stream_forwarding_gets_the_bridge() {
    let Some(lab) = lab() else { return };
    let _guard = lab.lock();
    let inv = Inventory::load(&lab.inventory).expect("inventory");
    let host = inv.hosts[0].clone();
    let _sshd = NoForwarding::new(&lab, &host.name);
    let session = carrier::connect(&host).await.expect("connect");
    let want = lab.show(&host.name, "demo-web.service")["ActiveState"].clone();
    assert_eq!(read_web(&session).await, want);
    assert_eq!(bridges(&lab, &host.name), 1, "the bridge carries D-Bus");
    session.close().await;
}
