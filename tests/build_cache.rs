//! scripts/build-cache.sh, which scripts/test.sh, scripts/serve.sh and the benchmarks source:
//! every checkout on a machine shares one build cache, and cargo takes a build to be current by
//! file times, so a checkout whose files are older than another checkout's build would run that
//! build. The script cleans this package's artifacts (debug and release) when the checkout that
//! sources it is not the one that last built, and only then. Run here with `cargo` on `PATH`
//! replaced by a script that records its arguments, in two temporary "checkouts".

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-cache.sh")
}

struct Sandbox {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    calls: PathBuf,
    target: PathBuf,
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let bin = root.join("bin");
        fs::create_dir(&bin).expect("bin");
        let calls = root.join("cargo-calls");
        let cargo = bin.join("cargo");
        fs::write(
            &cargo,
            format!("#!/bin/sh\necho \"$*\" >> '{}'\n", calls.display()),
        )
        .expect("fake cargo");
        Command::new("chmod")
            .arg("+x")
            .arg(&cargo)
            .status()
            .expect("chmod");
        let target = root.join("target");
        Sandbox {
            _dir: dir,
            bin,
            calls,
            target,
            root,
        }
    }

    fn checkout(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir).expect("checkout");
        dir
    }

    /// Sources the script from `checkout` as the scripts do; returns what it exported as
    /// CARGO_TARGET_DIR and its stderr.
    fn source(&self, checkout: &Path) -> (String, String) {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -euo pipefail; source '{}'; printf '%s' \"$CARGO_TARGET_DIR\"",
                script().display()
            ))
            .current_dir(checkout)
            .env("PATH", path)
            .env("CARGO_TARGET_DIR", &self.target)
            .output()
            .expect("bash");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build-cache.sh failed: {stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn stamp(&self) -> String {
        fs::read_to_string(self.target.join("switchyard-checkout")).unwrap_or_default()
    }
}

#[test]
fn a_new_build_cache_is_stamped_without_cleaning() {
    let sandbox = Sandbox::new();
    let a = sandbox.checkout("a");
    let (target, _) = sandbox.source(&a);
    assert_eq!(target, sandbox.target.display().to_string());
    assert!(sandbox.calls().is_empty(), "{:?}", sandbox.calls());
    let a = a.canonicalize().expect("canonical");
    assert_eq!(sandbox.stamp().trim_end(), a.display().to_string());
}

#[test]
fn another_checkout_cleans_this_package_once_and_the_same_one_never() {
    let sandbox = Sandbox::new();
    let a = sandbox.checkout("a");
    let b = sandbox.checkout("b");
    sandbox.source(&a);
    // The same checkout again: the cache is its own, nothing cleaned.
    let (_, said) = sandbox.source(&a);
    assert!(sandbox.calls().is_empty(), "{:?}", sandbox.calls());
    assert!(said.is_empty(), "{said}");

    // Another checkout: this package's debug and release artifacts, not its dependencies.
    let (_, said) = sandbox.source(&b);
    assert_eq!(
        sandbox.calls(),
        [
            "clean --locked --quiet --package switchyard",
            "clean --locked --quiet --package switchyard --release",
        ]
    );
    assert!(said.contains("another checkout"), "{said}");
    let b = b.canonicalize().expect("canonical");
    assert_eq!(sandbox.stamp().trim_end(), b.display().to_string());

    // It is now b's: b again cleans nothing, a again cleans once more.
    sandbox.source(&b);
    assert_eq!(sandbox.calls().len(), 2);
    sandbox.source(&a);
    assert_eq!(sandbox.calls().len(), 4);
}

#[test]
fn a_checkout_reached_through_a_link_is_the_same_checkout() {
    let sandbox = Sandbox::new();
    let a = sandbox.checkout("a");
    let link = sandbox.root.join("link-to-a");
    std::os::unix::fs::symlink(&a, &link).expect("symlink");
    sandbox.source(&a);
    sandbox.source(&link);
    assert!(sandbox.calls().is_empty(), "{:?}", sandbox.calls());
}
