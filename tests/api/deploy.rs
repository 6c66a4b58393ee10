//! The deployment files, read against the settings and against each other:
//! a variable they set that switchboard does not read, or a port one file
//! serves and another expects elsewhere, would deploy without complaint and
//! fail at run time. (CI also lints the image's recipe, validates the
//! Kubernetes manifests against their schemas and checks both Prometheus
//! configurations with promtool.)

use std::collections::BTreeSet;
use std::path::Path;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// What a deployment sets switchboard with, file by file.
const FILES: [&str; 5] = [
    "Dockerfile",
    "deploy/compose.yaml",
    "deploy/switchboard.service",
    "deploy/kubernetes/configmap.yaml",
    "deploy/kubernetes/deployment.yaml",
];

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Every `SWITCHBOARD_…` name in `text`.
fn switchboard_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("SWITCHBOARD_") {
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

/// The ports `text` gives `variable` (as `VARIABLE=host:port` or
/// `VARIABLE: "host:port"`).
fn ports_of(text: &str, variable: &str) -> BTreeSet<u16> {
    text.lines()
        .filter_map(|line| {
            let rest = line.split_once(variable)?.1;
            let value = rest.trim_start_matches([':', '=', ' ', '"']);
            let address: String = value
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\\')
                .collect();
            address.rsplit_once(':')?.1.parse().ok()
        })
        .collect()
}

#[test]
fn every_variable_a_deployment_sets_is_a_setting() {
    let settings = switchboard_names(&switchboard::config::Settings::markdown_table());
    // The load balancer's own variables (its backends), not switchboard's.
    let haproxy = switchboard_names(&read("deploy/haproxy.cfg"));
    for file in FILES
        .iter()
        .chain(&["deploy/kubernetes/kustomization.yaml"])
    {
        let unknown: Vec<String> = switchboard_names(&read(file))
            .into_iter()
            .filter(|name| !settings.contains(name) && !haproxy.contains(name))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names {unknown:?}, which no setting reads"
        );
    }
}

#[test]
fn the_api_and_admin_ports_agree_across_the_deployments() {
    let mut api = BTreeSet::new();
    let mut admin = BTreeSet::new();
    for file in FILES {
        let text = read(file);
        api.extend(ports_of(&text, "SWITCHBOARD_BIND"));
        admin.extend(ports_of(&text, "SWITCHBOARD_ADMIN_BIND"));
    }
    assert_eq!(api, BTreeSet::from([8080]), "the API's port");
    assert_eq!(admin, BTreeSet::from([9091]), "the admin listener's port");

    let exposed = read("Dockerfile");
    assert!(
        exposed.contains("EXPOSE 8080 9091"),
        "the image exposes both"
    );
    let deployment = read("deploy/kubernetes/deployment.yaml");
    for port in [
        "containerPort: 8080",
        "containerPort: 9091",
        "prometheus.io/port: \"9091\"",
    ] {
        assert!(deployment.contains(port), "deployment.yaml: {port}");
    }
    // Prometheus scrapes the admin listener of every instance compose runs.
    let scraped = read("deploy/prometheus.yml");
    let targets = scraped
        .lines()
        .filter(|line| line.trim_start().starts_with("- targets:"))
        .find(|line| line.contains("\"a:"))
        .expect("the instances' target list");
    let compose = read("deploy/compose.yaml");
    for instance in ["a", "b", "c"] {
        assert!(
            targets.contains(&format!("\"{instance}:9091\"")),
            "prometheus.yml scrapes {instance}'s admin listener: {targets}"
        );
        assert!(
            compose.contains(&format!("\n  {instance}:")),
            "compose.yaml runs {instance}"
        );
    }
}
