//! The container image (deploy/container/Containerfile), built with `buildah` (Debian package,
//! installed by `scripts/setup.sh --test`; as root). No registry is reachable here, so the test
//! makes its base images locally from this machine's files: a builder with a shell and `cp`, and
//! a runtime with only the C libraries the binary links (as the distroless base has), and hands
//! the build stage the binary this test suite built. Then it opens the image's filesystem
//! (`buildah mount`) and checks what a deployment relies on: the binary runs there (`--version`,
//! and `serve` on loopback as the image's user, on the image's own policy, with the models where
//! the init step puts them), the user is not root, there is no shell, and the policy and model
//! paths are the ones the Kubernetes manifests and the compose file name.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn buildah(args: &[&str]) -> String {
    run(Command::new("buildah").args(args))
}

/// The shared libraries `binary` loads (from `ldd`), the loader included.
fn libraries(binary: &Path) -> Vec<PathBuf> {
    let out = run(Command::new("ldd").arg(binary));
    out.lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

/// Copies `files` into `root`, each at its own absolute path, following links.
fn copy_into(root: &Path, files: &[PathBuf]) {
    for f in files {
        let to = root.join(f.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(f, &to).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
}

/// Makes a local base image `name` holding `files` at their own paths, `extra` text files, and a
/// world-writable /tmp.
fn local_base(name: &str, files: &[PathBuf], extra: &[(&str, &str)]) {
    let ctr = buildah(&["from", "scratch"]);
    let root = PathBuf::from(buildah(&["mount", &ctr]));
    copy_into(&root, files);
    for (path, text) in extra {
        let to = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::write(&to, text).expect("write");
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    run(Command::new("chmod").arg("1777").arg(&tmp));
    buildah(&["umount", &ctr]);
    buildah(&["commit", "--quiet", "--rm", &ctr, name]);
}

/// A build context: the repository's tracked and untracked-but-not-ignored files, and the test
/// suite's binary as `prebuilt/switchyard`.
fn context() -> tempfile::TempDir {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().expect("tmp");
    let files = run(Command::new("git").args([
        "-C",
        root,
        "ls-files",
        "--cached",
        "--others",
        "--exclude-standard",
    ]));
    for f in files.lines() {
        let from = Path::new(root).join(f);
        if !from.is_file() {
            continue;
        }
        let to = dir.path().join(f);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&from, &to).expect("copy");
    }
    let prebuilt = dir.path().join("prebuilt");
    std::fs::create_dir_all(&prebuilt).expect("mkdir");
    std::fs::copy(
        env!("CARGO_BIN_EXE_switchyard"),
        prebuilt.join("switchyard"),
    )
    .expect("copy binary");
    dir
}

/// The value of `name` in a rendered manifest or compose file: the first `value:` after
/// `- name: NAME` or the first `NAME: value` / `NAME=value`.
fn env_value(text: &str, name: &str) -> Option<String> {
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        let t = l.trim().trim_start_matches("- ");
        if t == format!("name: {name}") {
            let v = lines.next()?.trim().strip_prefix("value:")?.trim();
            return Some(v.trim_matches('"').trim_matches('\'').to_string());
        }
        for sep in [": ", "="] {
            if let Some(v) = t.strip_prefix(&format!("{name}{sep}")) {
                return Some(v.trim().trim_matches('"').trim_matches('\'').to_string());
            }
        }
    }
    None
}

struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in self.0.iter().rev() {
            let _ = Command::new("buildah")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[test]
fn the_image_runs_as_its_user_with_the_paths_the_manifests_name() {
    assert!(
        Command::new("buildah").arg("--version").output().is_ok(),
        "buildah is needed: scripts/setup.sh --test installs it (Debian package buildah)"
    );
    let tag = format!("switchyard-test-{}", std::process::id());
    let (builder, runtime, image) = (
        format!("localhost/{tag}-builder"),
        format!("localhost/{tag}-runtime"),
        format!("localhost/{tag}:ci"),
    );
    let mut cleanup = Cleanup(vec![]);
    for i in [&builder, &runtime, &image] {
        cleanup
            .0
            .push(vec!["rmi".into(), "--force".into(), i.clone()]);
    }
    // The builder: a shell and `cp`, for the build stage's one step.
    let mut tools = vec![];
    for b in ["/bin/sh", "/bin/cp"] {
        tools.push(PathBuf::from(b));
        tools.extend(libraries(Path::new(b)));
    }
    local_base(&builder, &tools, &[]);
    // The runtime, as the distroless base: the C libraries and a `nonroot` user 65532; no shell.
    let binary = Path::new(env!("CARGO_BIN_EXE_switchyard"));
    local_base(
        &runtime,
        &libraries(binary),
        &[
            (
                "/etc/passwd",
                "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
            ),
            ("/etc/group", "root:x:0:\nnonroot:x:65532:\n"),
        ],
    );

    let ctx = context();
    let started = Instant::now();
    let containerfile = ctx.path().join("deploy/container/Containerfile");
    buildah(&[
        "bud",
        "--quiet",
        "--isolation",
        "chroot",
        "--build-arg",
        &format!("BUILDER={builder}"),
        "--build-arg",
        &format!("RUNTIME={runtime}"),
        "--build-arg",
        "PREBUILT=prebuilt/switchyard",
        "-f",
        &containerfile.display().to_string(),
        "-t",
        &image,
        &ctx.path().display().to_string(),
    ]);
    println!("image built in {:?}", started.elapsed());

    // The image's configuration.
    let config: serde_json::Value =
        serde_json::from_str(&buildah(&["inspect", "--type", "image", &image])).expect("json");
    let oci = &config["OCIv1"]["config"];
    assert_eq!(oci["User"], "65532:65532", "{oci}");
    assert_eq!(oci["Entrypoint"][0], "/usr/local/bin/switchyard");
    let cmd: Vec<&str> = oci["Cmd"]
        .as_array()
        .expect("cmd")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        cmd,
        [
            "serve",
            "--listen",
            "0.0.0.0:8080",
            "--policy",
            "/etc/switchyard/policy.yaml"
        ]
    );
    let env: Vec<String> = oci["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let image_env = |name: &str| {
        env.iter()
            .find_map(|e| e.strip_prefix(&format!("{name}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("{name} not in the image's env: {env:?}"))
    };
    let model = image_env("SWITCHYARD_LOCAL_MODEL");
    let encoder = image_env("SWITCHYARD_ENCODER");

    // The manifests name the same paths.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut manifests = vec![];
    for overlay in ["single", "ha"] {
        let dir = repo.join("deploy/kubernetes/overlays").join(overlay);
        manifests.push((
            format!("kubernetes overlay {overlay}"),
            run(Command::new("kubectl").arg("kustomize").arg(&dir)),
        ));
    }
    manifests.push((
        "compose".to_string(),
        std::fs::read_to_string(repo.join("deploy/compose/compose.yaml")).expect("compose"),
    ));
    for (what, text) in &manifests {
        for (name, value) in [
            ("SWITCHYARD_LOCAL_MODEL", &model),
            ("SWITCHYARD_ENCODER", &encoder),
        ] {
            assert_eq!(
                env_value(text, name).as_ref(),
                Some(value),
                "{what}: {name}"
            );
        }
        assert!(text.contains("/etc/switchyard"), "{what} mounts the policy");
        assert!(text.contains("/models"), "{what} mounts the models");
    }

    // The filesystem: the binary, the policy, no shell.
    let ctr = buildah(&["from", &image]);
    cleanup.0.push(vec!["rm".into(), ctr.clone()]);
    let root = PathBuf::from(buildah(&["mount", &ctr]));
    assert!(root.join("usr/local/bin/switchyard").is_file());
    assert!(root.join("etc/switchyard/policy.yaml").is_file());
    // The heads calibrated for Qwen2.5-Coder-1.5B, for SWITCHYARD_LOCAL_HEADS with that model.
    let heads = "qwen2.5-coder-1.5b-instruct-q4_k_m";
    for f in ["heads.safetensors", "labels.json"] {
        let repo_file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("policies/heads")
            .join(heads)
            .join(f);
        let image_file = root.join("etc/switchyard/heads").join(heads).join(f);
        assert_eq!(
            std::fs::read(&image_file).ok(),
            Some(std::fs::read(&repo_file).expect("the repository's heads")),
            "{} in the image",
            image_file.display()
        );
    }
    assert!(!root.join("bin/sh").exists(), "no shell at run time");
    let version = run(Command::new("chroot")
        .arg(&root)
        .args(["/usr/local/bin/switchyard", "--version"]));
    assert!(version.starts_with("switchyard "), "{version}");
    let checked = run(Command::new("chroot")
        .arg("--userspec=65532:65532")
        .arg(&root)
        .args([
            "/usr/local/bin/switchyard",
            "policy",
            "check",
            "/etc/switchyard/policy.yaml",
        ]));
    assert!(checked.contains(": ok ("), "{checked}");

    // The init step's volume: the models where the image's variables say.
    for (from, to) in [
        (common_model("SmolLM2-135M-Instruct.Q4_1.gguf"), &model),
        (common_model("all-MiniLM-L6-v2"), &encoder),
    ] {
        let to = root.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        run(Command::new("cp").arg("-rL").arg(&from).arg(&to));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut serve = Command::new("chroot");
    serve.arg("--userspec=65532:65532").arg(&root).env_clear();
    for e in &env {
        if let Some((k, v)) = e.split_once('=') {
            serve.env(k, v);
        }
    }
    let mut child = Running(
        serve
            .args([
                "/usr/local/bin/switchyard",
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--policy",
                "/etc/switchyard/policy.yaml",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve in the image"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        if let Some(body) = get(port, "/readyz") {
            break body;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("serve exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "serve in the image never got ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(ready.contains("\"status\":\"ready\""), "{ready}");
    let _ = child.0.kill();
    let _ = child.0.wait();
}

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The body of a 200 answer to `GET path` on loopback `port`, or `None`.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// A default model as `scripts/fetch-models.sh` keeps it (the test set-up fetched it).
fn common_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name)
}
