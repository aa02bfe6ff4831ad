//! The deployment files under deploy/, checked with the tools their users run: every Kubernetes
//! overlay rendered with `kubectl kustomize` and validated, strictly, against the Kubernetes
//! schemas (`kubernetes-validate`), and read back for what a replica relies on (probes on the
//! gateway's endpoints, a grace period longer than its drain, a non-root user, the HA overlay's
//! Redis state); the compose file against the compose schema (`check-jsonschema`); every policy
//! they ship through `switchyard policy check`; and the Prometheus configuration and rules through
//! `promtool check` and `promtool test rules`. The validators come from the test venv
//! (`scripts/setup.sh --test`).

use serde::Deserialize;
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool of the test venv (next to `SWITCHYARD_PYTHON`).
fn venv_tool(name: &str) -> PathBuf {
    let python = std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/switchyard/venv/bin/python")
    });
    let tool = Path::new(&python).with_file_name(name);
    assert!(
        tool.is_file(),
        "{} is missing: scripts/setup.sh --test installs it",
        tool.display()
    );
    tool
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let (success, text) = output(cmd);
    assert!(success, "{shown} failed:\n{text}");
    text
}

/// `kubectl kustomize DIR`, as YAML documents.
fn render(dir: &Path) -> (String, Vec<Value>) {
    let text = ok(Command::new("kubectl").arg("kustomize").arg(dir));
    let docs = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .collect();
    (text, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The argument after `flag` (as `--flag=value` or `--flag value`) in a container's args.
fn flag(args: &[String], flag: &str) -> Option<f64> {
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&format!("{flag}="))
            .map(str::to_string)
            .or_else(|| (a == flag).then(|| args.get(i + 1).cloned()).flatten())
            .and_then(|v| v.parse().ok())
    })
}

/// Runs `switchyard policy check` on `text` with `env`.
fn policy_check(text: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, text).expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(["policy", "check"]).arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    ok(&mut cmd)
}

#[test]
fn every_overlay_renders_and_validates_strictly() {
    let validate = venv_tool("kubernetes-validate");
    let tmp = tempfile::tempdir().expect("tmp");
    // The optional ServiceMonitor on top of the HA overlay, in an overlay of the user's own
    // (outside the repository; kustomize takes relative paths only).
    let mine = tmp.path().join("with-monitor");
    std::fs::create_dir_all(&mine).expect("mkdir");
    let up = "../".repeat(mine.components().count() - 1);
    let k8s = format!(
        "{up}{}",
        repo()
            .join("deploy/kubernetes")
            .display()
            .to_string()
            .trim_start_matches('/')
    );
    std::fs::write(
        mine.join("kustomization.yaml"),
        format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {k8s}/overlays/ha\ncomponents:\n  - {k8s}/components/servicemonitor\n"),
    )
    .expect("write");
    let overlays = repo().join("deploy/kubernetes/overlays");
    let rendered = [
        ("single", overlays.join("single")),
        ("ha", overlays.join("ha")),
        ("ha with a ServiceMonitor", mine),
    ]
    .map(|(o, dir)| {
        let (text, docs) = render(&dir);
        let file = tmp.path().join(format!("{}.yaml", o.replace(' ', "-")));
        std::fs::write(&file, &text).expect("write");
        (o, file, docs)
    });
    for (overlay, file, _) in &rendered {
        // 1.32: the kubectl of these machines; an unknown field or a wrong type fails.
        let text = ok(Command::new(&validate)
            .args(["--strict", "--kubernetes-version", "1.32.0"])
            .arg(file));
        assert!(!text.contains("ERROR"), "{overlay}: {text}");
    }
    let monitor = &rendered[2].2;
    let sm = find(monitor, "ServiceMonitor", "switchyard");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");

    for (overlay, _, docs) in &rendered[..2] {
        let d = find(docs, "Deployment", "switchyard");
        let spec = &d["spec"]["template"]["spec"];
        let c = spec["containers"]
            .as_sequence()
            .and_then(|c| c.iter().find(|c| c["name"] == "switchyard"))
            .expect("the gateway container");
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{overlay}"
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{overlay}"
        );
        let startup = &c["startupProbe"];
        let budget = startup["periodSeconds"].as_f64().unwrap_or(10.0)
            * startup["failureThreshold"].as_f64().unwrap_or(3.0);
        assert!(
            budget >= 120.0,
            "{overlay}: a startup probe of {budget} s for model load"
        );
        let args: Vec<String> = c["args"]
            .as_sequence()
            .into_iter()
            .flatten()
            .chain(c["command"].as_sequence().into_iter().flatten())
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        let drain = flag(&args, "--drain-delay-secs").unwrap_or(5.0)
            + flag(&args, "--drain-timeout-secs").unwrap_or(30.0);
        let grace = spec["terminationGracePeriodSeconds"]
            .as_f64()
            .expect("grace");
        assert!(grace > drain, "{overlay}: grace {grace} s, drain {drain} s");
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{overlay}");
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{overlay}"
        );
        assert!(
            c["resources"]["requests"]["memory"].is_string(),
            "{overlay}"
        );
        assert!(
            docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"),
            "{overlay}"
        );
        // The policy ConfigMap passes the gateway's own check.
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["data"]["policy.yaml"].is_string())
            .expect("the policy ConfigMap");
        let policy = cm["data"]["policy.yaml"].as_str().expect("text");
        let checked = policy_check(
            policy,
            &[(
                "SWITCHYARD_REDIS_URL",
                "redis://:pw@switchyard-redis:6379/0",
            )],
        );
        assert!(checked.contains(": ok ("), "{overlay}: {checked}");
        let replicas = d["spec"]["replicas"].as_u64();
        if *overlay == "single" {
            assert_eq!(replicas, Some(1));
            assert!(!policy.contains("\nstate:"), "single: memory state");
        } else {
            assert!(replicas >= Some(3), "ha: {replicas:?}");
            assert!(
                policy.contains("\nstate:\n  backend: redis"),
                "ha: Redis state"
            );
            let hpa = find(docs, "HorizontalPodAutoscaler", "switchyard");
            assert!(hpa["spec"]["minReplicas"].as_u64() >= Some(2));
            assert!(
                docs.iter()
                    .any(|d| d["kind"] == "Deployment" && d["metadata"]["name"] != "switchyard"),
                "ha: a Redis"
            );
        }
    }
}

#[test]
fn the_shipped_policies_are_the_default_and_the_default_with_redis_state() {
    let default =
        std::fs::read_to_string(repo().join("policies/default.yaml")).expect("default policy");
    let base = std::fs::read_to_string(repo().join("deploy/kubernetes/base/policy.yaml"))
        .expect("base policy");
    assert_eq!(
        base, default,
        "deploy/kubernetes/base/policy.yaml: copy policies/default.yaml"
    );
    let ha = std::fs::read_to_string(repo().join("deploy/kubernetes/overlays/ha/policy.yaml"))
        .expect("ha policy");
    let compose =
        std::fs::read_to_string(repo().join("deploy/compose/policy.yaml")).expect("compose");
    assert!(
        ha.starts_with(&default),
        "the HA policy is the default plus `state:`"
    );
    assert_eq!(compose, ha, "compose runs the HA policy");
    let tail = &ha[default.len()..];
    assert!(tail.contains("backend: redis") && tail.contains("${SWITCHYARD_REDIS_URL}"));
}

#[test]
fn the_compose_file_follows_the_compose_schema() {
    let check = venv_tool("check-jsonschema");
    let file = repo().join("deploy/compose/compose.yaml");
    let text = ok(Command::new(check)
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(&file));
    assert!(text.contains("ok"), "{text}");
    let compose: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&file).expect("read")).expect("YAML");
    let services = &compose["services"];
    for s in ["gateway", "redis", "prometheus", "grafana", "models"] {
        assert!(!services[s].is_null(), "service {s}");
    }
    assert_eq!(services["gateway"]["deploy"]["replicas"], 2);
    let config = repo().join("deploy/compose/prometheus.yml");
    ok(Command::new(promtool())
        .args(["check", "config"])
        .arg(config));
}

fn promtool() -> String {
    std::env::var("SWITCHYARD_PROMTOOL").unwrap_or_else(|_| "promtool".to_string())
}

#[test]
fn the_prometheus_rules_check_and_pass_their_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    let rules: Vec<PathBuf> = std::fs::read_dir(dir.join("rules"))
        .expect("rules")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    assert!(rules.len() >= 2, "recording rules and alerts");
    ok(Command::new(promtool())
        .args(["check", "rules"])
        .args(&rules));
    ok(Command::new(promtool())
        .current_dir(&dir)
        .args(["check", "config", "prometheus.yml"]));
    let tests: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))
        .expect("tests")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert!(!tests.is_empty());
    let text = ok(Command::new(promtool())
        .current_dir(&dir)
        .args(["test", "rules"])
        .args(&tests));
    assert!(text.contains("SUCCESS"), "{text}");
}
