//! What kind of value a setting takes: how its text is parsed (and why it
//! is refused, in words that follow the setting's name) and how a value is
//! shown, in `--help`, the README's table and the log of effective settings.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub trait Kind<T> {
    fn parse(&self, raw: &str) -> Result<T, String>;
    fn show(&self, value: &T) -> String;
}

/// A whole number, zero included.
pub struct Number;
/// A whole number from 1.
pub struct Positive;
/// Milliseconds from 1; `Millis(true)` takes 0 too.
pub struct Millis(pub bool);
/// Seconds from 1.
pub struct Seconds;
pub struct Boolean;
pub struct Address;
/// Comma-separated `host` or `host:port` (a TOML array works too).
pub struct Hosts;
/// Comma-separated origins such as `https://app.example.com`.
pub struct Origins;
/// One of a fixed set of words, any case.
pub struct Choice;
/// Unset (`None`) unless given; the inner kind parses what is given.
pub struct Optional<K>(pub K);
/// Free text that `check` accepts.
pub struct Text(pub fn(&str) -> Result<(), String>);
/// A file's path.
pub struct FilePath;

impl<T: FromStr + Display> Kind<T> for Number {
    fn parse(&self, raw: &str) -> Result<T, String> {
        raw.parse().map_err(|_| "is not a whole number".into())
    }
    fn show(&self, value: &T) -> String {
        value.to_string()
    }
}

impl<T: FromStr + Display + PartialOrd + Default> Kind<T> for Positive {
    fn parse(&self, raw: &str) -> Result<T, String> {
        let n: T = Number.parse(raw)?;
        if n > T::default() {
            Ok(n)
        } else {
            Err("must be at least 1".into())
        }
    }
    fn show(&self, value: &T) -> String {
        value.to_string()
    }
}

impl Kind<Duration> for Millis {
    fn parse(&self, raw: &str) -> Result<Duration, String> {
        let ms = if self.0 {
            Number.parse(raw)?
        } else {
            Positive.parse(raw)?
        };
        Ok(Duration::from_millis(ms))
    }
    fn show(&self, value: &Duration) -> String {
        value.as_millis().to_string()
    }
}

impl Kind<Duration> for Seconds {
    fn parse(&self, raw: &str) -> Result<Duration, String> {
        Positive.parse(raw).map(Duration::from_secs)
    }
    fn show(&self, value: &Duration) -> String {
        value.as_secs().to_string()
    }
}

impl Kind<bool> for Boolean {
    fn parse(&self, raw: &str) -> Result<bool, String> {
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("is not true or false".into()),
        }
    }
    fn show(&self, value: &bool) -> String {
        value.to_string()
    }
}

impl Kind<SocketAddr> for Address {
    fn parse(&self, raw: &str) -> Result<SocketAddr, String> {
        raw.parse()
            .map_err(|_| "is not an address such as 127.0.0.1:8080".into())
    }
    fn show(&self, value: &SocketAddr) -> String {
        value.to_string()
    }
}

impl Kind<Vec<String>> for Hosts {
    fn parse(&self, raw: &str) -> Result<Vec<String>, String> {
        listed(raw)
            .map(|host| {
                if is_host(host) {
                    Ok(host.to_ascii_lowercase())
                } else {
                    Err(format!("has {host:?}, which is not a host or host:port"))
                }
            })
            .collect()
    }
    fn show(&self, value: &Vec<String>) -> String {
        value.join(",")
    }
}

impl Kind<Vec<String>> for Origins {
    fn parse(&self, raw: &str) -> Result<Vec<String>, String> {
        listed(raw)
            .map(|origin| {
                let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
                    matches!(scheme, "http" | "https") && !host.is_empty() && is_host(host)
                });
                if valid {
                    Ok(origin.to_owned())
                } else {
                    Err(format!(
                        "has {origin:?}, which is not an origin such as https://app.example.com"
                    ))
                }
            })
            .collect()
    }
    fn show(&self, value: &Vec<String>) -> String {
        value.join(",")
    }
}

fn listed(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn is_host(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// A type whose values are named by fixed words.
pub trait Choices: Sized + Copy + PartialEq + 'static {
    const CHOICES: &'static [(&'static str, Self)];
}

impl<T: Choices> Kind<T> for Choice {
    fn parse(&self, raw: &str) -> Result<T, String> {
        let raw = raw.to_ascii_lowercase();
        T::CHOICES
            .iter()
            .find(|(word, _)| *word == raw)
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                let words: Vec<&str> = T::CHOICES.iter().map(|(word, _)| *word).collect();
                format!("is not one of {}", words.join(", "))
            })
    }
    fn show(&self, value: &T) -> String {
        T::CHOICES
            .iter()
            .find(|(_, v)| v == value)
            .map_or_else(String::new, |(word, _)| (*word).to_owned())
    }
}

impl<T, K: Kind<T>> Kind<Option<T>> for Optional<K> {
    fn parse(&self, raw: &str) -> Result<Option<T>, String> {
        self.0.parse(raw).map(Some)
    }
    fn show(&self, value: &Option<T>) -> String {
        value.as_ref().map_or_else(String::new, |v| self.0.show(v))
    }
}

impl Kind<String> for Text {
    fn parse(&self, raw: &str) -> Result<String, String> {
        (self.0)(raw).map(|()| raw.to_owned())
    }
    fn show(&self, value: &String) -> String {
        value.clone()
    }
}

impl Kind<PathBuf> for FilePath {
    fn parse(&self, raw: &str) -> Result<PathBuf, String> {
        if raw.trim().is_empty() {
            return Err("is not a file path".into());
        }
        Ok(PathBuf::from(raw))
    }
    fn show(&self, value: &PathBuf) -> String {
        value.display().to_string()
    }
}

/// An IPv6 prefix length, 1 to 128.
pub struct PrefixLength;

impl Kind<u8> for PrefixLength {
    fn parse(&self, raw: &str) -> Result<u8, String> {
        let n: u8 = Positive.parse(raw)?;
        (n <= 128)
            .then_some(n)
            .ok_or_else(|| "must be from 1 to 128".to_owned())
    }
    fn show(&self, value: &u8) -> String {
        value.to_string()
    }
}
