//! Keys that rotate without a restart.
//!
//! One task owns the key files: it loads them at start-up (a bad file stops
//! start-up), then reads them again on `SIGHUP` and every second, and when
//! what they hold has changed and parses, it publishes the new key set. A
//! file that fails to read or parse keeps the keys in use, and the log says
//! why, once per change. Nothing asks this task anything, so it is a task
//! rather than an actor; each HTTP worker keeps its own copy of the
//! published set ([`Authenticator`]), swapped by a task on the worker's
//! thread, so verifying a token touches no lock and no other thread.
//!
//! Polling the content (not an inotify watch) also sees a file that a
//! Kubernetes Secret or ConfigMap volume replaces by swapping a symlink.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::keys::{KeyFileContents, KeyFiles, KeySet, Rules};
use super::verified::VerifiedTokens;
use super::verify::{verify, Principal, Refusal};

/// How often the key files are read for changes.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Loads the keys, then keeps them current; the receiver sees each new set.
pub fn start(files: KeyFiles, rules: Rules) -> Result<watch::Receiver<Arc<KeySet>>, String> {
    let contents = files.read()?;
    let keys = KeySet::parse(&files, &contents, &rules)?;
    log_loaded(&keys, "keys loaded");
    let (publish, keys) = watch::channel(Arc::new(keys));
    // Installed now, so that a SIGHUP from here on reloads (and never
    // ends the process, SIGHUP's default).
    let hangups = signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
    let mut reloader = Reloader {
        files,
        rules,
        contents,
        failure: None,
        publish,
    };
    actix_web::rt::spawn(async move { reloader.run(hangups).await });
    Ok(keys)
}

fn log_loaded(keys: &KeySet, what: &str) {
    for skipped in &keys.skipped {
        tracing::warn!(%skipped, "a JWKS key is left out");
    }
    tracing::info!(keys = keys.len(), "{what}");
}

struct Reloader {
    files: KeyFiles,
    rules: Rules,
    /// What the files held when last read.
    contents: KeyFileContents,
    /// The last failure logged, so that it is logged once.
    failure: Option<String>,
    publish: watch::Sender<Arc<KeySet>>,
}

impl Reloader {
    async fn run(&mut self, mut hangups: tokio::signal::unix::Signal) {
        let mut ticks = actix_web::rt::time::interval(POLL_EVERY);
        loop {
            let asked = tokio::select! {
                _ = ticks.tick() => false,
                _ = hangups.recv() => true,
            };
            self.reload(asked);
        }
    }

    /// Reads the files; publishes their keys if they changed and parse.
    fn reload(&mut self, asked: bool) {
        let contents = match self.files.read() {
            Ok(contents) => contents,
            Err(why) => return self.failed(why),
        };
        if contents == self.contents {
            if asked {
                tracing::info!("SIGHUP: the key files are unchanged");
            }
            return;
        }
        self.contents = contents;
        match KeySet::parse(&self.files, &self.contents, &self.rules) {
            Ok(keys) => {
                self.failure = None;
                log_loaded(&keys, "keys reloaded");
                self.publish.send_replace(Arc::new(keys));
            }
            Err(why) => self.failed(why),
        }
    }

    fn failed(&mut self, why: String) {
        if self.failure.as_ref() != Some(&why) {
            tracing::warn!(%why, "the key files cannot be used: keeping the keys in use");
            self.failure = Some(why);
        }
    }
}

/// One HTTP worker's copy of the keys, and the token check.
pub struct Authenticator {
    keys: RefCell<Arc<KeySet>>,
    verified: VerifiedTokens,
}

impl Authenticator {
    /// This worker's copy of `keys`, replaced whenever they change (call on
    /// the worker's own thread).
    pub fn start(mut keys: watch::Receiver<Arc<KeySet>>) -> Rc<Self> {
        let authenticator = Rc::new(Self {
            keys: RefCell::new(keys.borrow_and_update().clone()),
            verified: VerifiedTokens::default(),
        });
        let weak = Rc::downgrade(&authenticator);
        actix_web::rt::spawn(async move {
            while keys.changed().await.is_ok() {
                let Some(authenticator) = weak.upgrade() else {
                    break;
                };
                let current = keys.borrow_and_update().clone();
                *authenticator.keys.borrow_mut() = current;
                authenticator.verified.clear();
            }
        });
        authenticator
    }

    /// Who `token` speaks for, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        if let Some(principal) = self.verified.get(token) {
            return Ok(principal);
        }
        let verified = verify(&self.keys.borrow(), token)?;
        self.verified.keep(token, &verified);
        Ok(verified.principal)
    }
}
