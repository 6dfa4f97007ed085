//! kiln-bench: side-by-side benchmarks. Every figure is reported with a
//! reference measured in the same run (see DESIGN.md, "Benchmark output").

mod api;
mod auth;
mod blk;
mod boot;
mod cloud;
mod e2e;
mod http;
mod net;
mod placement;
mod report;
mod scratch;
mod servers;
mod sg;
mod stats;
mod tsc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln-bench",
    about = "kiln's benchmarks, each against a same-run reference"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compute API at fleet scale: create→ACTIVE with simulated nodes, servers/s, list 10,000, over-commit audit.
    Api(api::ApiArgs),
    /// Token validation and an authenticated GET against the unauthenticated version document.
    Auth(auth::AuthArgs),
    /// virtio-blk on a raw file: 4 KiB randread/randwrite at QD1/QD32 and 128 KiB sequential read, vs fio on the host and QEMU microvm (--vs host,qemu).
    Blk(blk::BlkArgs),
    /// Spawn → "kiln-firmware: booted" for kiln-vmm (and QEMU microvm with --vs qemu); VMM memory overhead; P guests at once.
    Boot(boot::BootArgs),
    /// Real guests end to end: POST /servers → ACTIVE (firmware booted) and delete → gone with the kvm driver, 50 sequential + 20 concurrent.
    E2e(e2e::E2eArgs),
    /// virtio-net UDP guest→host and host→guest at 64 and 1400 bytes through a TAP, vs QEMU microvm (--vs qemu).
    Net(net::NetArgs),
    /// Security groups: iperf3 with and without 1,000 ports' rules; port update and reconcile times vs `nft -f`.
    Sg(sg::SgArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Api(a) => api::run(a),
        Cmd::Auth(a) => auth::run(a),
        Cmd::Blk(a) => blk::run(a),
        Cmd::Boot(a) => boot::run(a),
        Cmd::E2e(a) => e2e::run(a),
        Cmd::Net(a) => net::run(a),
        Cmd::Sg(a) => sg::run(a),
    }
}
