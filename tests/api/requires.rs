//! What a test needs from this machine beyond its build: a server that
//! answers, a program on the `PATH`, root. A test that finds one missing
//! says so on stderr and returns early, unless `SWITCHBOARD_REQUIRE_<WHAT>=1`
//! says it must be there: then the test fails, so a run that sets them all
//! (CI does) can never pass by skipping.

use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `found`, after saying why the test skips when it is false; panics
/// instead when `switch` is set to 1.
pub fn present(found: bool, switch: &str, missing: &str) -> bool {
    if !found {
        assert_ne!(
            std::env::var(switch).as_deref(),
            Ok("1"),
            "{missing}, and {switch}=1 requires it"
        );
        eprintln!("skipping: {missing} ({switch}=1 fails instead)");
    }
    found
}

/// Whether an executable named `program` is on the `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn programs(names: &[&str], switch: &str, install: &str) -> bool {
    let missing: Vec<&str> = names.iter().copied().filter(|p| !on_path(p)).collect();
    present(
        missing.is_empty(),
        switch,
        &format!("{} not installed ({install})", missing.join(", ")),
    )
}

fn listening(what: &str, address: &str, switch: &str) -> bool {
    let up = TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(1)).is_ok();
    present(up, switch, &format!("no {what} answers at {address}"))
}

pub fn redis() -> bool {
    listening("Redis", "127.0.0.1:6379", "SWITCHBOARD_REQUIRE_REDIS")
}

pub fn haproxy() -> bool {
    programs(
        &["haproxy"],
        "SWITCHBOARD_REQUIRE_HAPROXY",
        "apt-get install haproxy",
    )
}

pub fn prometheus() -> bool {
    programs(
        &["prometheus", "promtool"],
        "SWITCHBOARD_REQUIRE_PROMETHEUS",
        "apt-get install prometheus",
    )
}

pub fn chromium() -> bool {
    programs(
        &["chromium"],
        "SWITCHBOARD_REQUIRE_CHROMIUM",
        "apt-get install chromium",
    )
}

/// The newest PostgreSQL server's `bin` directory, where `initdb` and
/// `pg_ctl` live (Debian keeps them off the `PATH`).
pub fn postgres_server_bin() -> Option<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    let newest = versions.flatten().map(|v| v.path()).max()?;
    let bin = newest.join("bin");
    bin.join("initdb").is_file().then_some(bin)
}

/// What a storage fault takes: root (to mount a tmpfs, make a file
/// immutable, run a PostgreSQL cluster as its own user), the programs that
/// do it, and PostgreSQL's server binaries.
pub fn storage_faults() -> bool {
    const SWITCH: &str = "SWITCHBOARD_REQUIRE_STORAGE_FAULTS";
    let root = Path::new("/proc/self")
        .metadata()
        .is_ok_and(|m| m.uid() == 0);
    present(root, SWITCH, "not running as root")
        && programs(
            &["chattr", "mount", "umount", "runuser", "chown"],
            SWITCH,
            "apt-get install e2fsprogs mount util-linux",
        )
        && present(
            postgres_server_bin().is_some(),
            SWITCH,
            "no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)",
        )
}
