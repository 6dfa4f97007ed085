//! The kiln-vmm binary: `kiln-vmm --config FILE`. Builds the VM, runs it,
//! and exits 0 on a clean guest shutdown, 1 on a VMM error (one line on
//! stderr), 2 when the guest crashed, 3 when a shutdown had to be forced,
//! 4 when SIGTERM/SIGINT/SIGHUP stopped it.

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_vmm::{build, metrics, VmConfig};

const USAGE: &str = "usage: kiln-vmm --config FILE";

fn config_path() -> Result<PathBuf, String> {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(path), None) if flag == "--config" => Ok(PathBuf::from(path)),
        _ => Err(USAGE.to_string()),
    }
}

fn main() -> ExitCode {
    metrics::mark_start();
    kiln_vmm::process::abort_on_panic();
    let path = match config_path() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln-vmm: {e}");
            return ExitCode::from(1);
        }
    };
    let vm = match VmConfig::from_file(&path)
        .map_err(kiln_vmm::BuildError::from)
        .and_then(|c| build(&c))
    {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("kiln-vmm: {e}");
            return ExitCode::from(1);
        }
    };
    let reason = vm.run();
    if let Some(msg) = reason.message() {
        eprintln!("kiln-vmm: {msg}");
    }
    ExitCode::from(reason.exit_code() as u8)
}
