//! Which hand-written CPU kernels run: chosen once, at start-up, from what the CPU reports, so
//! one binary (built for the portable x86-64-v3 baseline, `.cargo/config.toml`) is fast on every
//! common CPU. The setting `SWITCHYARD_KERNEL=avx512|avx2|scalar` can lower the choice (for
//! tests and comparisons), never raise it past what the CPU has.
//!
//! The tiers: `avx512` (AVX-512 F/BW/VL; the on-box block kernels add VNNI when present),
//! `avx2` (AVX2 + FMA + F16C; the block kernels add AVX-VNNI when present) and `scalar` (plain
//! Rust, vectorised only as far as the build's baseline allows). The encoder's dense layers and
//! attention and the on-box model's block kernels follow the choice.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// The environment variable that lowers the kernel tier.
pub const SETTING: &str = "SWITCHYARD_KERNEL";

/// A kernel tier, ordered from the most portable to the fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelPath {
    Scalar,
    Avx2,
    Avx512,
}

impl KernelPath {
    /// Every tier, most portable first.
    pub const ALL: [KernelPath; 3] = [KernelPath::Scalar, KernelPath::Avx2, KernelPath::Avx512];

    /// The tier's name (`scalar`, `avx2`, `avx512`).
    pub fn as_str(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the tier.
    pub fn supported(self) -> bool {
        match self {
            KernelPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => {
                KernelPath::Avx2.supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The tiers this CPU can run, most portable first.
    pub fn supported_paths() -> Vec<KernelPath> {
        KernelPath::ALL
            .into_iter()
            .filter(|p| p.supported())
            .collect()
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KernelPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        KernelPath::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("{SETTING}=`{s}` is not a kernel tier (avx512, avx2 or scalar)"))
    }
}

/// The fastest tier this CPU runs.
pub fn detected() -> KernelPath {
    KernelPath::ALL
        .into_iter()
        .rev()
        .find(|p| p.supported())
        .unwrap_or(KernelPath::Scalar)
}

/// The tier for a setting (`None`: unset) on a CPU whose best tier is `best`, and a note when
/// the setting asked for more than the CPU has. Errors: a value that names no tier.
pub fn resolve(
    setting: Option<&str>,
    best: KernelPath,
) -> Result<(KernelPath, Option<String>), String> {
    let Some(s) = setting.filter(|s| !s.trim().is_empty()) else {
        return Ok((best, None));
    };
    let asked: KernelPath = s.parse()?;
    if asked > best {
        let note = format!("{SETTING}={asked} asks for more than this CPU has; using {best}");
        return Ok((best, Some(note)));
    }
    Ok((asked, None))
}

static CHOSEN: OnceLock<KernelPath> = OnceLock::new();

/// The tier the process runs: from [`SETTING`] (read, never written) and the CPU, decided on
/// first use. An invalid setting falls back to the CPU's best with a warning; `serve` and the
/// other commands call [`init`] first, which refuses it instead.
pub fn chosen() -> KernelPath {
    *CHOSEN.get_or_init(|| {
        let setting = std::env::var(SETTING).ok();
        match resolve(setting.as_deref(), detected()) {
            Ok((path, note)) => {
                if let Some(note) = note {
                    tracing::warn!("{note}");
                }
                path
            }
            Err(e) => {
                tracing::warn!("{e}; using {}", detected());
                detected()
            }
        }
    })
}

/// Decides the tier at start-up (every command calls it first). Errors: a setting that names
/// no tier.
pub fn init() -> Result<KernelPath, String> {
    let setting = std::env::var(SETTING).ok();
    resolve(setting.as_deref(), detected())?;
    Ok(chosen())
}

/// The choice in words, for logs and benchmark output: the tier, the CPU's best, the setting
/// and the on-box block kernel.
pub fn describe() -> String {
    let path = chosen();
    let mut s = format!("{path}");
    if path != detected() {
        s.push_str(&format!(
            " (this CPU runs up to {}; {SETTING} lowers it)",
            detected()
        ));
    }
    s.push_str(&format!(
        "; on-box block kernels: {}",
        crate::local::block_kernel_name(path)
    ));
    s
}

/// Runs `f` for every tier this CPU supports, and prints a note naming each tier it skips (the
/// test suite's way to run every kernel path the CI machine has, and to say which it did not).
pub fn for_each_supported_path(mut f: impl FnMut(KernelPath)) {
    for p in KernelPath::ALL {
        if p.supported() {
            f(p);
        } else {
            note(format_args!(
                "the {p} kernels are not tested here: this CPU lacks them"
            ));
        }
    }
}

/// Writes a line to stderr past the test harness's output capture, so a skipped kernel path is
/// seen in every test run, passing or not.
pub fn note(line: fmt::Arguments) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "NOTE: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_lowers_the_tier_but_never_raises_it() {
        use KernelPath::*;
        assert_eq!(resolve(None, Avx512), Ok((Avx512, None)));
        assert_eq!(resolve(Some(" "), Avx2), Ok((Avx2, None)));
        assert_eq!(resolve(Some("AVX2"), Avx512), Ok((Avx2, None)));
        assert_eq!(resolve(Some("scalar"), Avx512), Ok((Scalar, None)));
        let (path, note) = resolve(Some("avx512"), Avx2).unwrap();
        assert_eq!(path, Avx2);
        assert!(note.unwrap().contains("more than this CPU has"));
        assert!(resolve(Some("sse4"), Avx512)
            .unwrap_err()
            .contains("not a kernel tier"));
        assert!(Scalar < Avx2 && Avx2 < Avx512);
        assert!(Scalar.supported());
        assert!(KernelPath::supported_paths().contains(&detected()));
    }
}
