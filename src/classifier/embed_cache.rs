//! A disk cache of sentence embeddings for training and evaluation runs, keyed by the SHA-256 of
//! the text, one file per encoder and token budget. Never used on the request path.

use super::encoder::Encoder;
use super::ClassifierError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Embeddings by text digest, backed by an append-only file.
pub struct EmbedCache {
    path: Option<PathBuf>,
    dim: usize,
    map: HashMap<[u8; 32], Vec<f32>>,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl EmbedCache {
    /// Opens (or starts) the cache file; `None` keeps it in memory only.
    pub fn open(path: Option<&Path>, dim: usize) -> EmbedCache {
        let mut map = HashMap::new();
        if let Some(bytes) = path.and_then(|p| std::fs::read(p).ok()) {
            let entry = 32 + dim * 4;
            for chunk in bytes.chunks_exact(entry) {
                let mut key = [0u8; 32];
                key.copy_from_slice(&chunk[..32]);
                let v = chunk[32..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                map.insert(key, v);
            }
        }
        EmbedCache {
            path: path.map(Path::to_path_buf),
            dim,
            map,
        }
    }

    /// The cache file for an encoder folder, token budget and pooled layers (empty: the last)
    /// under `cache_dir`.
    pub fn file_for(
        cache_dir: &Path,
        encoder: &Path,
        max_tokens: usize,
        layers: &[usize],
    ) -> PathBuf {
        let name = encoder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "encoder".into());
        let pooled = if layers.is_empty() {
            String::new()
        } else {
            let l: Vec<String> = layers.iter().map(ToString::to_string).collect();
            format!("-layers{}", l.join("."))
        };
        cache_dir.join(format!("{name}-{max_tokens}{pooled}.emb"))
    }

    /// Embeddings of `texts` (in order), computing and storing the missing ones; `progress` is
    /// told how many texts are done.
    pub fn embed(
        &mut self,
        encoder: &Encoder,
        max_tokens: usize,
        texts: &[&str],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>, ClassifierError> {
        let mut missing: Vec<&str> = texts
            .iter()
            .copied()
            .filter(|t| !self.map.contains_key(&digest(t)))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let total = texts.len();
        let cached = total - missing.len();
        progress(cached, total);
        let mut done = cached;
        // In slices, so that an interrupted run keeps what it computed.
        for slice in missing.chunks(512) {
            let embedded = encoder.embed_texts(slice, max_tokens, 32)?;
            let mut file = match &self.path {
                Some(p) => {
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent).ok();
                    }
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .ok()
                }
                None => None,
            };
            for (text, (e, _)) in slice.iter().zip(embedded) {
                let key = digest(text);
                if let Some(f) = file.as_mut() {
                    let mut buf = Vec::with_capacity(32 + self.dim * 4);
                    buf.extend_from_slice(&key);
                    for x in &e {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                    let _ = f.write_all(&buf);
                }
                self.map.insert(key, e);
            }
            done += slice.len();
            progress(done, total);
        }
        Ok(texts
            .iter()
            .map(|t| self.map.get(&digest(t)).cloned().unwrap_or_default())
            .collect())
    }
}
