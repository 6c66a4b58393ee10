//! The real `switchboard` binary, for what only a process shows: exit
//! codes, signals, `kill -9`, and the log lines it writes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The real `switchboard` binary, logging JSON lines that tests can read.
pub struct ProcessApp {
    pub child: Child,
    pub address: String,
    logs: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ProcessApp {
    /// Starts the binary with these variables (on a free port) and waits
    /// until it logs that it is listening.
    pub fn start(database_url: &str, vars: &[(&str, &str)]) -> Self {
        Self::spawn(Self::command(database_url, vars))
    }

    /// The binary as [`ProcessApp::start`] runs it, for a test to change
    /// before [`ProcessApp::spawn`].
    pub fn command(database_url: &str, vars: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command
            .env("SWITCHBOARD_BIND", "127.0.0.1:0")
            .env("DATABASE_URL", database_url)
            .env("SWITCHBOARD_LOG_FORMAT", "json")
            .env("SWITCHBOARD_WORKERS", "2")
            .env("RUST_LOG", "info")
            // Tests that watch the delay set their own.
            .env("SWITCHBOARD_SHUTDOWN_DELAY_MS", "0")
            .envs(vars.iter().copied());
        command
    }

    /// Starts `command` and waits until it logs that it is listening.
    pub fn spawn(command: Command) -> Self {
        Launched::start(command).listening()
    }

    /// Starts every command at once, then waits until each logs that it
    /// is listening.
    pub fn spawn_together(commands: Vec<Command>) -> Vec<Self> {
        let launched: Vec<Launched> = commands.into_iter().map(Launched::start).collect();
        launched.into_iter().map(Launched::listening).collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Log events so far whose message is `message`.
    pub fn logged(&self, message: &str) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["message"] == message)
            .cloned()
            .collect()
    }

    /// Log events so far at this level (`ERROR`, `WARN`, ...).
    pub fn logged_at_level(&self, level: &str) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == level)
            .cloned()
            .collect()
    }

    /// Waits (at most five seconds) for a log event with this message that
    /// `matches`, and returns it.
    pub fn wait_for_log(&self, message: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_logged(message, |events| events.into_iter().find(|e| matches(e)))
    }

    /// Waits (at most five seconds) until `count` log events with this
    /// message have arrived, and returns them all.
    pub fn wait_for_logs(&self, message: &str, count: usize) -> Vec<Value> {
        self.wait_for_logged(message, |events| (events.len() >= count).then_some(events))
    }

    /// Polls the events with this message until `found` picks something.
    fn wait_for_logged<T>(&self, message: &str, found: impl Fn(Vec<Value>) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(picked) = found(self.logged(message)) {
                return picked;
            }
            assert!(Instant::now() < deadline, "no {message:?} log line arrived");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory the server has had, in KiB: a buffer held
    /// for a moment shows here even once it is freed.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/{}/status", self.child.id()))
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).expect("signal switchboard");
    }

    /// Waits for the process to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Its stdout is closed now: let the reader take the last lines.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "switchboard did not exit in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A process started, not yet known to listen.
struct Launched {
    child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
    reader: std::thread::JoinHandle<()>,
    address: std::sync::mpsc::Receiver<String>,
}

impl Launched {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start switchboard");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (listening, address) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&logs);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["message"] == "listening" {
                    let _ =
                        listening.send(event["address"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(event);
            }
        });
        Self {
            child,
            logs,
            reader,
            address,
        }
    }

    fn listening(self) -> ProcessApp {
        let address = self
            .address
            .recv_timeout(Duration::from_secs(60))
            .expect("switchboard logs that it is listening");
        ProcessApp {
            child: self.child,
            address: format!("http://{address}"),
            logs: self.logs,
            reader: Some(self.reader),
        }
    }
}

impl Drop for ProcessApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
