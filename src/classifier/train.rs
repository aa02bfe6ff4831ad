//! Training of the routing heads on frozen embeddings (candle-nn, AdamW), deterministic for a
//! seed: the initial weights, the validation split and the batch order all come from it.

use super::data::{Example, CATEGORIES};
use super::eval::{apgr, category_scores, pgr_curve, Outcome};
use super::heads::{
    describe_experts, mixture_weights, select_blocks, Heads, Labels, Mlp, StrongExpert,
};
use super::ClassifierError;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use std::collections::{HashMap, HashSet};

/// Settings of a training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub seed: u64,
    pub epochs: usize,
    pub hidden: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Share of the examples held out for validation. Held-out label rows
    /// ([`super::data::LABELS_SOURCE`]) are only scored; the same share of the other label rows
    /// chooses the strong heads' epoch.
    pub validation: f64,
    /// Rows of a label file (`switchyard label`) learned beside the training folder's strong
    /// labels: their share of the strong heads' loss (MMLU-Pro's rows carry 1, the synthetic
    /// tasks' 0.3), and each head learns them as much as the mixture weighs it at the row
    /// ([`head_weights`]). `None`: label rows carry 1 and every head learns them fully (for
    /// label rows that replace the folder's strong labels).
    pub labels_share: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 7,
            epochs: 40,
            hidden: 128,
            batch: 256,
            learning_rate: 1e-3,
            weight_decay: 1e-2,
            validation: 0.1,
            labels_share: None,
        }
    }
}

/// A small deterministic random generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            xs.swap(i, j);
        }
    }
}

/// Mixed into the seed to pick, among label rows not held out, those that choose the epoch.
const TUNING_SALT: u64 = 0x7e57_5eed_0000_0001;

/// Whether an example is held out: a hash of its text and the seed, so the split does not
/// depend on the order of the data.
pub fn held_out(text: &str, seed: u64, share: f64) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Rng::new(h).unit() < share
}

fn uniform(rng: &mut Rng, shape: (usize, usize), bound: f64) -> candle_core::Result<Var> {
    let n = shape.0 * shape.1;
    let data: Vec<f32> = (0..n)
        .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
        .collect();
    Var::from_tensor(&Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// Trainable parameters of an MLP (or, with `hidden == 0`, of a linear model).
struct Params {
    vars: Vec<Var>,
    hidden: usize,
}

impl Params {
    fn new(rng: &mut Rng, input: usize, hidden: usize, out: usize) -> candle_core::Result<Params> {
        let vars = if hidden == 0 {
            let b = 1.0 / (input as f64).sqrt();
            vec![uniform(rng, (out, input), b)?, uniform(rng, (1, out), b)?]
        } else {
            let b1 = 1.0 / (input as f64).sqrt();
            let b2 = 1.0 / (hidden as f64).sqrt();
            vec![
                uniform(rng, (hidden, input), b1)?,
                uniform(rng, (1, hidden), b1)?,
                uniform(rng, (out, hidden), b2)?,
                uniform(rng, (1, out), b2)?,
            ]
        };
        Ok(Params { vars, hidden })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let v = &self.vars;
        let lin = |x: &Tensor, w: &Var, b: &Var| x.matmul(&w.as_tensor().t()?)?.broadcast_add(b);
        if self.hidden == 0 {
            lin(x, &v[0], &v[1])
        } else {
            lin(&lin(x, &v[0], &v[1])?.relu()?, &v[2], &v[3])
        }
    }

    /// Parameters that start from a trained MLP's weights.
    fn from_mlp(m: &Mlp) -> candle_core::Result<Params> {
        let b1 = m.b1.reshape((1, m.b1.elem_count()))?;
        let b2 = m.b2.reshape((1, m.b2.elem_count()))?;
        Ok(Params {
            hidden: m.w1.dims2()?.0,
            vars: [&m.w1, &b1, &m.w2, &b2]
                .into_iter()
                .map(|t| Var::from_tensor(&t.copy()?))
                .collect::<candle_core::Result<_>>()?,
        })
    }

    /// Parameters that start from a [`Params::snapshot`].
    fn from_snapshot(snapshot: &[Tensor], hidden: usize) -> candle_core::Result<Params> {
        Ok(Params {
            hidden,
            vars: snapshot
                .iter()
                .map(|t| Var::from_tensor(&t.copy()?))
                .collect::<candle_core::Result<_>>()?,
        })
    }

    fn snapshot(&self) -> candle_core::Result<Vec<Tensor>> {
        self.vars.iter().map(|v| v.as_tensor().copy()).collect()
    }

    fn mlp(snapshot: &[Tensor]) -> candle_core::Result<Mlp> {
        Ok(Mlp {
            w1: snapshot[0].clone(),
            b1: snapshot[1].flatten_all()?,
            w2: snapshot[2].clone(),
            b2: snapshot[3].flatten_all()?,
        })
    }
}

/// Weighted cross-entropy over class logits.
fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    (picked * weights)?.sum_all()?.neg()? / weights.sum_all()?.to_scalar::<f32>()? as f64
}

/// Weighted binary cross-entropy with soft targets, from logits (numerically stable form).
fn soft_bce(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> candle_core::Result<Tensor> {
    let z = logits.squeeze(1)?;
    let loss = ((z.relu()? - (&z * targets)?)? + ((z.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    (loss * weights)?.sum_all()? / weights.sum_all()?.to_scalar::<f32>()? as f64
}

/// One supervised task: inputs, targets and per-example weights, split into train/validation.
struct Task {
    x: Tensor,
    targets: Tensor,
    weights: Tensor,
}

impl Task {
    fn select(&self, idx: &[usize]) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let ids = Tensor::from_vec(
            idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            idx.len(),
            &Device::Cpu,
        )?;
        Ok((
            self.x.index_select(&ids, 0)?,
            self.targets.index_select(&ids, 0)?,
            self.weights.index_select(&ids, 0)?,
        ))
    }
}

type Loss = fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor>;

/// One pass over `order` (shuffled first) in batches; returns the mean batch loss.
fn epoch(
    task: &Task,
    order: &mut [usize],
    params: &Params,
    opt: &mut AdamW,
    loss: Loss,
    cfg: &TrainConfig,
    rng: &mut Rng,
) -> Result<f64, ClassifierError> {
    rng.shuffle(order);
    let mut total = 0.0;
    let mut batches = 0;
    for chunk in order.chunks(cfg.batch) {
        let (x, t, w) = task.select(chunk)?;
        let l = loss(&params.forward(&x)?, &t, &w)?;
        opt.backward_step(&l)?;
        total += l.to_scalar::<f32>()? as f64;
        batches += 1;
    }
    Ok(total / batches.max(1) as f64)
}

fn optimizer(params: &Params, cfg: &TrainConfig) -> Result<AdamW, ClassifierError> {
    Ok(AdamW::new(
        params.vars.clone(),
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?)
}

/// Fits parameters on `train` rows, keeping the epoch with the lowest validation loss (epoch 0,
/// the starting point, included). Returns the kept weights and their epoch.
#[allow(clippy::too_many_arguments)]
fn fit(
    name: &str,
    task: &Task,
    train: &[usize],
    val: &[usize],
    params: &Params,
    loss: Loss,
    cfg: &TrainConfig,
    rng: &mut Rng,
    log: &mut dyn FnMut(String),
) -> Result<(Vec<Tensor>, usize), ClassifierError> {
    let mut opt = optimizer(params, cfg)?;
    let (vx, vt, vw) = task.select(val)?;
    // Epoch 0 is the starting point: with weights from base heads, training keeps them unless
    // an epoch does better on validation.
    let start = if val.is_empty() {
        f64::INFINITY
    } else {
        loss(&params.forward(&vx)?, &vt, &vw)?.to_scalar::<f32>()? as f64
    };
    let mut best = (start, params.snapshot()?, 0);
    let mut order = train.to_vec();
    for epoch_no in 1..=cfg.epochs {
        let train_loss = epoch(task, &mut order, params, &mut opt, loss, cfg, rng)?;
        let v = if val.is_empty() {
            train_loss
        } else {
            loss(&params.forward(&vx)?, &vt, &vw)?.to_scalar::<f32>()? as f64
        };
        if epoch_no == 1 || epoch_no % 5 == 0 || epoch_no == cfg.epochs {
            log(format!(
                "{name:>9} epoch {epoch_no:>3}  train loss {train_loss:.4}  validation loss {v:.4}"
            ));
        }
        if v < best.0 {
            best = (v, params.snapshot()?, epoch_no);
        }
    }
    log(format!(
        "{name:>9} kept epoch {} (validation loss {:.4})",
        best.2, best.0
    ));
    Ok((best.1, best.2))
}

/// Trains `params` on `rows` for exactly `epochs` epochs and returns the weights (the starting
/// ones for 0 epochs): the second pass of a run whose epoch count was chosen on rows that are
/// now trained on too.
#[allow(clippy::too_many_arguments)]
fn fit_epochs(
    name: &str,
    task: &Task,
    rows: &[usize],
    params: &Params,
    epochs: usize,
    loss: Loss,
    cfg: &TrainConfig,
    rng: &mut Rng,
    log: &mut dyn FnMut(String),
) -> Result<Vec<Tensor>, ClassifierError> {
    let mut opt = optimizer(params, cfg)?;
    let mut order = rows.to_vec();
    let mut train_loss = f64::NAN;
    for _ in 0..epochs {
        train_loss = epoch(task, &mut order, params, &mut opt, loss, cfg, rng)?;
    }
    log(format!(
        "{name:>9} trained again on {} rows for {epochs} epochs (train loss {train_loss:.4})",
        rows.len()
    ));
    Ok(params.snapshot()?)
}

/// The rows `rows` of a `[n, dim]` tensor.
fn select_rows(x: &Tensor, rows: &[usize]) -> candle_core::Result<Tensor> {
    let ids: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
    x.index_select(&Tensor::from_vec(ids, rows.len(), &Device::Cpu)?, 0)
}

/// Example weights: every group's total weight is `share(group) / count(group)` per example.
fn group_weights(keys: &[String], share: impl Fn(&str, usize) -> f64) -> Vec<f32> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for k in keys {
        *counts.entry(k.as_str()).or_default() += 1;
    }
    keys.iter()
        .map(|k| {
            let n = counts[k.as_str()];
            (share(k, n) / n as f64) as f32
        })
        .collect()
}

/// Relative weight of each source in the strong-score loss: a source's rows together weigh
/// its share, however many they are.
fn strong_source_share(source: &str, cfg: &TrainConfig) -> f64 {
    match source {
        "synthetic_tasks" => 0.3,
        super::data::LABELS_SOURCE => cfg.labels_share.unwrap_or(1.0),
        _ => 1.0,
    }
}

/// The weight of each strong row (`rows`, indices of `examples`, with `weights`) for each strong
/// head: the strong head first, then each expert (`gates`: the category indices of each). With
/// [`TrainConfig::labels_share`], a label row counts for a head as much as the strong score's
/// mixture weighs that head at the row: an expert by the category head's probability of its
/// categories, the strong head by what is left; so labels on word problems teach the maths
/// expert, which scores word problems, and leave the strong head to the folder's labels. Every
/// other row counts fully for every head.
fn head_weights(
    examples: &[Example],
    rows: &[usize],
    weights: &[f32],
    category: &Mlp,
    x_all: &Tensor,
    gates: &[Vec<usize>],
    cfg: &TrainConfig,
) -> Result<Vec<Vec<f32>>, ClassifierError> {
    let mut out = vec![weights.to_vec(); 1 + gates.len()];
    let labelled: Vec<usize> = (0..rows.len())
        .filter(|&j| examples[rows[j]].source == super::data::LABELS_SOURCE)
        .collect();
    if cfg.labels_share.is_none() || gates.is_empty() || labelled.is_empty() {
        return Ok(out);
    }
    let x = select_rows(
        x_all,
        &labelled.iter().map(|&j| rows[j]).collect::<Vec<_>>(),
    )?;
    let probs = candle_nn::ops::softmax_last_dim(&category.forward(&x)?)?.to_vec2::<f32>()?;
    for (&j, p) in labelled.iter().zip(&probs) {
        let (rest, gated) = mixture_weights(p, gates);
        out[0][j] = weights[j] * rest;
        for (e, g) in gated.into_iter().enumerate() {
            out[1 + e][j] = weights[j] * g;
        }
    }
    Ok(out)
}

/// What a training run measured on its validation split.
#[derive(Debug, Clone)]
pub struct Report {
    pub category_accuracy: f64,
    pub category_macro_f1: f64,
    /// APGR of the strong score on held-out MMLU-Pro questions, for [`super::data::MMLU_PAIR`].
    pub mmlu_pro_apgr: Option<f64>,
    /// APGR of the strong score on held-out rows of a label file (on-box model against the cloud).
    pub labels_apgr: Option<f64>,
    pub train_examples: usize,
    pub validation_examples: usize,
}

/// Which encoder layers the heads read, as [`Labels`] records them: the layers the embeddings
/// pool (empty: the last), those the strong head reads (empty: all) and the strong experts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    pub layers: Vec<usize>,
    pub strong_layers: Vec<usize>,
    pub strong_experts: Vec<StrongExpert>,
}

/// Trains both heads on the examples' embeddings (of the encoder's last layer).
pub fn train(
    examples: &[Example],
    embeddings: &[Vec<f32>],
    cfg: &TrainConfig,
    encoder: &str,
    max_tokens: usize,
    log: &mut dyn FnMut(String),
) -> Result<(Heads, Report), ClassifierError> {
    train_from(
        examples,
        embeddings,
        cfg,
        encoder,
        max_tokens,
        &Layout::default(),
        None,
        log,
    )
}

/// [`train`], or, with `base`, heads that start from trained ones: the base's category head is
/// kept as it is, and its strong head (any hidden width) goes on learning the examples' strong
/// targets, keeping the epoch with the lowest validation loss, the base itself included. For a
/// few hundred labels of one on-box model, where a head trained from scratch has too little to
/// learn from.
///
/// `layout` says which layers the embeddings pool and which of them each head reads. Each strong
/// expert learns the same targets as the strong head, on its own layers, after it (so adding
/// experts leaves the other heads as they were); with `base`, the base's experts go on
/// learning as its strong head does.
///
/// Errors: no examples; base heads for another encoder, other layers, other experts or
/// embedding width; a strong layer that is not pooled; an expert for an unknown category.
#[allow(clippy::too_many_arguments)]
pub fn train_from(
    examples: &[Example],
    embeddings: &[Vec<f32>],
    cfg: &TrainConfig,
    encoder: &str,
    max_tokens: usize,
    layout: &Layout,
    base: Option<&Heads>,
    log: &mut dyn FnMut(String),
) -> Result<(Heads, Report), ClassifierError> {
    let dim = embeddings.first().map(Vec::len).unwrap_or(0);
    if dim == 0 || embeddings.len() != examples.len() {
        return Err(ClassifierError::Format("no training examples".into()));
    }
    let (layers, strong_layers) = (&layout.layers[..], &layout.strong_layers[..]);
    let mut labels = Labels {
        categories: CATEGORIES.iter().map(|c| c.to_string()).collect(),
        encoder: encoder.to_string(),
        layers: layers.to_vec(),
        strong_layers: strong_layers.to_vec(),
        max_tokens,
        strong_label: "share of small models answering an MMLU-Pro question wrong, plus the \
                       synthetic tasks' complexity at 0.3 weight; see docs/router-quality.md"
            .to_string(),
        model: None,
        model_file: None,
        strong_experts: layout.strong_experts.clone(),
        held_out: None,
    };
    let strong_blocks = labels.strong_blocks()?;
    labels.expert_gates()?;
    let expert_blocks = labels.expert_blocks()?;
    let strong_dim = strong_blocks
        .as_ref()
        .map_or(dim, |b| dim / layers.len().max(1) * b.len());
    if let Some(b) = base {
        let width = b.strong.w1.dims2()?.1;
        if b.labels.encoder != encoder
            || width != strong_dim
            || b.labels.layers != layers
            || b.labels.strong_blocks()? != strong_blocks
            || b.labels.strong_experts != layout.strong_experts
        {
            return Err(ClassifierError::Format(format!(
                "the base heads read {width}-wide embeddings of {} (layers {:?}, strong {:?}, \
                 experts [{}]), not {strong_dim}-wide ones of {encoder} (layers {layers:?}, \
                 strong {strong_layers:?}, experts [{}])",
                b.labels.encoder,
                b.labels.layers,
                b.labels.strong_layers,
                describe_experts(&b.labels.strong_experts),
                describe_experts(&layout.strong_experts)
            )));
        }
        labels.categories = b.labels.categories.clone();
    }
    let mut rng = Rng::new(cfg.seed);
    let held: Vec<bool> = examples
        .iter()
        .map(|e| held_out(&e.text, cfg.seed, cfg.validation))
        .collect();
    let flat: Vec<f32> = embeddings.iter().flatten().copied().collect();
    let x_all = Tensor::from_vec(flat, (embeddings.len(), dim), &Device::Cpu)?;

    // Category head: classes balanced; inside a class, every source has the same share (one
    // single-domain source must not define a category alone).
    let cat_rows: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].category.is_some())
        .collect();
    let source_keys: Vec<String> = cat_rows
        .iter()
        .map(|&i| {
            format!(
                "{}/{}",
                examples[i].category.unwrap_or(0),
                examples[i].source
            )
        })
        .collect();
    let mut sources_per_class: HashMap<String, usize> = HashMap::new();
    {
        let mut seen: Vec<&str> = source_keys.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for k in seen {
            let class = k.split('/').next().unwrap_or("").to_string();
            *sources_per_class.entry(class).or_default() += 1;
        }
    }
    let cat_weights = group_weights(&source_keys, |k, _| {
        let class = k.split('/').next().unwrap_or("");
        1.0 / sources_per_class.get(class).copied().unwrap_or(1) as f64
    });
    let cat_task = Task {
        x: select_rows(&x_all, &cat_rows)?,
        targets: Tensor::from_vec(
            cat_rows
                .iter()
                .map(|&i| examples[i].category.unwrap_or(0) as u32)
                .collect::<Vec<_>>(),
            cat_rows.len(),
            &Device::Cpu,
        )?,
        weights: Tensor::from_vec(cat_weights, cat_rows.len(), &Device::Cpu)?,
    };
    let (ct, cv): (Vec<usize>, Vec<usize>) = (0..cat_rows.len()).partition(|&j| !held[cat_rows[j]]);
    let category = match base {
        Some(b) => b.category.clone(),
        None => {
            let cat_params = Params::new(&mut rng, dim, cfg.hidden, CATEGORIES.len())?;
            let (cat_best, _) = fit(
                "category",
                &cat_task,
                &ct,
                &cv,
                &cat_params,
                cross_entropy,
                cfg,
                &mut rng,
                log,
            )?;
            Params::mlp(&cat_best)?
        }
    };

    // Strong head: soft targets, each source's total weight set by its share.
    let strong_rows: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].strong.is_some())
        .collect();
    let keys: Vec<String> = strong_rows
        .iter()
        .map(|&i| examples[i].source.to_string())
        .collect();
    let weights = group_weights(&keys, |k, _| strong_source_share(k, cfg));
    let per_head = head_weights(
        examples,
        &strong_rows,
        &weights,
        &category,
        &x_all,
        &labels.expert_gates()?,
        cfg,
    )?;
    let strong_x = select_rows(&x_all, &strong_rows)?;
    let view = |blocks: &Option<Vec<usize>>| match blocks {
        Some(blocks) => select_blocks(&strong_x, blocks, layers.len()),
        None => Ok(strong_x.clone()),
    };
    let targets = Tensor::from_vec(
        strong_rows
            .iter()
            .map(|&i| examples[i].strong.unwrap_or(0.0))
            .collect::<Vec<_>>(),
        strong_rows.len(),
        &Device::Cpu,
    )?;
    let StrongSplit {
        train: st,
        choose: sv,
        refit,
        tuned,
    } = strong_split(examples, &strong_rows, &held, cfg);
    let is_label = |j: usize| examples[strong_rows[j]].source == super::data::LABELS_SOURCE;
    if cfg.validation > 0.0 && !tuned && sv.is_empty() && (0..strong_rows.len()).any(is_label) {
        return Err(ClassifierError::Format(format!(
            "too few label rows to choose an epoch on: of the {} not held out, none fell in the \
             share {} that chooses it; add labels or raise --validation",
            refit.len(),
            cfg.validation
        )));
    }
    // The strong head, then each expert: the same task on their own blocks, each starting from
    // the base's head where there is one.
    let mut to_fit = vec![(
        "strong".to_string(),
        &strong_blocks,
        base.map(|b| &b.strong),
    )];
    for (i, (spec, blocks)) in layout.strong_experts.iter().zip(&expert_blocks).enumerate() {
        let name = format!("strong {}", spec.categories.join("+"));
        to_fit.push((name, blocks, base.and_then(|b| b.experts.get(i))));
    }
    let mut fitted = vec![];
    for ((name, blocks, start), weights) in to_fit.into_iter().zip(per_head) {
        let task = Task {
            x: view(blocks)?,
            targets: targets.clone(),
            weights: Tensor::from_vec(weights, strong_rows.len(), &Device::Cpu)?,
        };
        let params = match start {
            Some(m) => Params::from_mlp(m)?,
            None => Params::new(&mut rng, task.x.dims2()?.1, cfg.hidden, 1)?,
        };
        let start = params.snapshot()?;
        let (mut best, kept) = fit(
            &name, &task, &st, &sv, &params, soft_bce, cfg, &mut rng, log,
        )?;
        if tuned {
            let again = Params::from_snapshot(&start, params.hidden)?;
            best = fit_epochs(
                &name, &task, &refit, &again, kept, soft_bce, cfg, &mut rng, log,
            )?;
        }
        fitted.push(Params::mlp(&best)?);
    }
    let strong = fitted.remove(0);

    let heads = Heads {
        labels,
        category,
        strong,
        experts: fitted,
    };

    // Validation report.
    let val_rows: Vec<usize> = (0..examples.len()).filter(|&i| held[i]).collect();
    let val_emb: Vec<Vec<f32>> = val_rows.iter().map(|&i| embeddings[i].clone()).collect();
    let outs = heads.apply(&val_emb)?;
    let (mut gold, mut pred) = (vec![], vec![]);
    let (mut scores, mut outcomes) = (vec![], vec![]);
    let (mut label_scores, mut label_outcomes) = (vec![], vec![]);
    for (&i, o) in val_rows.iter().zip(&outs) {
        if let Some(c) = examples[i].category {
            gold.push(c);
            pred.push(argmax(&o.categories));
        }
        let Some((w, s)) = examples[i].pair else {
            continue;
        };
        let outcome = Outcome {
            weak: f64::from(u8::from(w)),
            strong: f64::from(u8::from(s)),
        };
        match examples[i].source {
            "mmlu_pro" => {
                scores.push(f64::from(o.strong_score));
                outcomes.push(outcome);
            }
            super::data::LABELS_SOURCE => {
                label_scores.push(f64::from(o.strong_score));
                label_outcomes.push(outcome);
            }
            _ => {}
        }
    }
    let (category_accuracy, category_macro_f1) = category_scores(&gold, &pred);
    let report = Report {
        category_accuracy,
        category_macro_f1,
        mmlu_pro_apgr: (!scores.is_empty()).then(|| apgr(&pgr_curve(&scores, &outcomes))),
        labels_apgr: (!label_scores.is_empty())
            .then(|| apgr(&pgr_curve(&label_scores, &label_outcomes))),
        train_examples: examples.len() - val_rows.len(),
        validation_examples: val_rows.len(),
    };
    Ok((heads, report))
}

/// The strong heads' rows by role, as indices into `strong_rows` (indices of `examples`;
/// `held`: each example held out for scoring).
struct StrongSplit {
    /// Rows the first fit trains on.
    train: Vec<usize>,
    /// Rows whose loss chooses the epoch kept.
    choose: Vec<usize>,
    /// Rows trained on again, from the same start, for the epochs chosen (when `tuned`).
    refit: Vec<usize>,
    /// Whether label rows chose the epoch (and the head is trained again on `refit`).
    tuned: bool,
}

/// Splits the strong rows. The folder's held-out rows choose each strong head's epoch and
/// measure the run. Held-out label rows are the calibration's test rows (`eval-router --labels`
/// scores them), so they neither train nor choose anything: the epoch is chosen on another slice
/// of the label rows (the same share of the rest), and the head is then trained again, from the
/// same start, on every label row not held out for that many epochs. A folder row with a label
/// row's text (a label file that asked the folder's own questions) is held out with it, the
/// split being by text, and chooses nothing either: else the held-out label rows' questions would
/// choose the epoch under the folder's label.
fn strong_split(
    examples: &[Example],
    strong_rows: &[usize],
    held: &[bool],
    cfg: &TrainConfig,
) -> StrongSplit {
    let is_label = |j: usize| examples[strong_rows[j]].source == super::data::LABELS_SOURCE;
    let tuning = |j: usize| {
        is_label(j)
            && !held[strong_rows[j]]
            && held_out(
                &examples[strong_rows[j]].text,
                cfg.seed ^ TUNING_SALT,
                cfg.validation,
            )
    };
    let label_texts: HashSet<&str> = (0..strong_rows.len())
        .filter(|&j| is_label(j))
        .map(|j| examples[strong_rows[j]].text.as_str())
        .collect();
    let rows = 0..strong_rows.len();
    StrongSplit {
        train: rows
            .clone()
            .filter(|&j| !held[strong_rows[j]] && !tuning(j))
            .collect(),
        choose: rows
            .clone()
            .filter(|&j| {
                let folder_held = held[strong_rows[j]]
                    && !is_label(j)
                    && !label_texts.contains(examples[strong_rows[j]].text.as_str());
                folder_held || tuning(j)
            })
            .collect(),
        refit: rows.clone().filter(|&j| !held[strong_rows[j]]).collect(),
        tuned: rows.into_iter().any(tuning),
    }
}

/// A logistic regression on the embeddings for a 0/1 label (the documented baseline router).
pub fn logistic_regression(
    embeddings: &[Vec<f32>],
    labels: &[f32],
    cfg: &TrainConfig,
    log: &mut dyn FnMut(String),
) -> Result<impl Fn(&[f32]) -> f32, ClassifierError> {
    let dim = embeddings.first().map(Vec::len).unwrap_or(0);
    let n = embeddings.len().min(labels.len());
    let flat: Vec<f32> = embeddings[..n].iter().flatten().copied().collect();
    let task = Task {
        x: Tensor::from_vec(flat, (n, dim), &Device::Cpu)?,
        targets: Tensor::from_vec(labels[..n].to_vec(), n, &Device::Cpu)?,
        weights: Tensor::ones(n, DType::F32, &Device::Cpu)?,
    };
    let mut rng = Rng::new(cfg.seed);
    let params = Params::new(&mut rng, dim, 0, 1)?;
    let all: Vec<usize> = (0..n).collect();
    let (best, _) = fit(
        "baseline",
        &task,
        &all,
        &[],
        &params,
        soft_bce,
        cfg,
        &mut rng,
        log,
    )?;
    let w = best[0].flatten_all()?.to_vec1::<f32>()?;
    let b = best[1].flatten_all()?.to_vec1::<f32>()?[0];
    Ok(move |e: &[f32]| {
        let z: f32 = e.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() + b;
        1.0 / (1.0 + (-z).exp())
    })
}

/// Index of the largest value.
pub fn argmax(xs: &[f32]) -> usize {
    xs.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_rng_are_deterministic() {
        assert_eq!(held_out("abc", 1, 0.5), held_out("abc", 1, 0.5));
        let share = (0..2000)
            .filter(|i| held_out(&i.to_string(), 3, 0.1))
            .count();
        assert!((150..250).contains(&share), "{share}");
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        assert_eq!(a.next_u64(), b.next_u64());
    }

    /// Label rows learned beside the folder's labels teach each head as much as the mixture
    /// weighs it at the row; folder rows, and label rows that replace the folder's, teach all.
    #[test]
    fn label_rows_are_shared_out_by_the_category_gate() {
        let example = |source: &'static str| Example {
            text: source.to_string(),
            source,
            category: None,
            strong: Some(1.0),
            pair: None,
        };
        let examples = [
            example("mmlu_pro"),
            example(super::super::data::LABELS_SOURCE),
            example(super::super::data::LABELS_SOURCE),
        ];
        // The category head passes its two inputs through as logits: rows [ln 3, 0] and [0, 0]
        // give P(class 0) = 0.75 and 0.5.
        let eye = Tensor::new(&[[1f32, 0.], [0., 1.]], &Device::Cpu).expect("eye");
        let zero = Tensor::zeros(2, DType::F32, &Device::Cpu).expect("zero");
        let category = Mlp {
            w1: eye.clone(),
            b1: zero.clone(),
            w2: eye,
            b2: zero,
        };
        let x = Tensor::new(&[[0f32, 0.], [3f32.ln(), 0.], [0., 0.]], &Device::Cpu).expect("x");
        let weights = [1.0f32, 0.5, 0.5];
        let gates = vec![vec![0usize]];
        let weights_with = |cfg: &TrainConfig| {
            head_weights(&examples, &[0, 1, 2], &weights, &category, &x, &gates, cfg)
                .expect("weights")
        };
        let w = weights_with(&TrainConfig {
            labels_share: Some(1.0),
            ..TrainConfig::default()
        });
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(&w[0], &[1.0, 0.125, 0.25]), "strong head: {w:?}");
        assert!(close(&w[1], &[1.0, 0.375, 0.25]), "expert: {w:?}");
        let replaced = weights_with(&TrainConfig::default());
        assert_eq!(replaced, vec![weights.to_vec(), weights.to_vec()]);
    }

    /// Label rows held out for scoring (`eval-router --labels`) neither train nor choose the
    /// epoch: heads trained on label files that differ only in those rows' labels are the same,
    /// while the other label rows do change them.
    #[test]
    fn held_out_label_rows_choose_no_epoch() {
        let cfg = TrainConfig {
            validation: 0.3,
            epochs: 8,
            hidden: 4,
            batch: 16,
            ..TrainConfig::default()
        };
        let labels = super::super::data::LABELS_SOURCE;
        let mut rng = Rng::new(11);
        let mut examples = vec![];
        for i in 0..20 {
            examples.push(Example {
                text: format!("c{i}"),
                source: "seeds",
                category: Some(i % 2),
                strong: None,
                pair: None,
            });
        }
        for i in 0..80 {
            let label = rng.unit() as f32;
            examples.push(Example {
                text: format!("l{i}"),
                source: labels,
                category: None,
                strong: Some(label),
                pair: Some((label < 0.5, true)),
            });
        }
        let embeddings: Vec<Vec<f32>> = examples
            .iter()
            .map(|_| (0..8).map(|_| rng.unit() as f32 - 0.5).collect())
            .collect();
        let trained_again = (0..80)
            .filter(|i| !held_out(&format!("l{i}"), cfg.seed, cfg.validation))
            .count();
        let strong_head = |examples: &[Example]| {
            let mut log = vec![];
            let (heads, _) = train(examples, &embeddings, &cfg, "enc", 128, &mut |l| {
                log.push(l)
            })
            .unwrap_or_else(|e| panic!("{e}"));
            // The epoch was chosen on other label rows, then the head trained on all of those
            // not held out.
            let again = format!("trained again on {trained_again} rows");
            assert!(log.iter().any(|l| l.contains(&again)), "{log:?}");
            (
                heads.strong.w1.to_vec2::<f32>().expect("w1"),
                heads.strong.b2.to_vec1::<f32>().expect("b2"),
            )
        };
        let flipped = |held: bool| {
            let mut out = examples.clone();
            for e in out.iter_mut().filter(|e| {
                e.source == labels && held_out(&e.text, cfg.seed, cfg.validation) == held
            }) {
                e.strong = e.strong.map(|s| 1.0 - s);
            }
            out
        };
        let base = strong_head(&examples);
        assert_eq!(base, strong_head(&flipped(true)));
        assert_ne!(base, strong_head(&flipped(false)));
    }

    /// Beside the folder: a folder row that asks a label row's question is held out with it
    /// (the split is by text) and chooses no epoch, so the folder's label on a held-out label
    /// row's question cannot steer the heads scored on it; the folder's other held-out rows and
    /// the tuning slice of the label rows choose it, and nothing held out trains.
    #[test]
    fn folder_twins_of_label_rows_choose_no_epoch() {
        let cfg = TrainConfig {
            validation: 0.3,
            ..TrainConfig::default()
        };
        let labels = super::super::data::LABELS_SOURCE;
        let row = |text: String, source: &'static str| Example {
            text,
            source,
            category: None,
            strong: Some(0.5),
            pair: None,
        };
        let mut examples = vec![];
        for i in 0..200 {
            examples.push(row(format!("q{i}"), labels));
            examples.push(row(format!("q{i}"), "mmlu_pro"));
            examples.push(row(format!("f{i}"), "mmlu_pro"));
        }
        let held: Vec<bool> = examples
            .iter()
            .map(|e| held_out(&e.text, cfg.seed, cfg.validation))
            .collect();
        let strong_rows: Vec<usize> = (0..examples.len()).collect();
        let split = strong_split(&examples, &strong_rows, &held, &cfg);
        let of = |rows: &[usize]| -> Vec<&Example> { rows.iter().map(|&j| &examples[j]).collect() };
        let choose = of(&split.choose);
        assert!(split.tuned);
        assert!(
            choose
                .iter()
                .all(|e| e.source == labels || e.text.starts_with('f')),
            "a folder twin of a label row chooses the epoch"
        );
        assert!(choose
            .iter()
            .all(|e| !held_out(&e.text, cfg.seed, cfg.validation) || e.source != labels));
        // Both kinds of choosing row are there: the folder's own held-out rows, and label rows.
        assert!(choose.iter().any(|e| e.text.starts_with('f')));
        assert!(choose.iter().any(|e| e.source == labels));
        for rows in [&split.train, &split.refit] {
            assert!(rows.iter().all(|&j| !held[j]));
        }
        // The first fit leaves the choosing label rows out; the refit takes every row not held.
        assert!(split.choose.iter().all(|j| !split.train.contains(j)));
        assert_eq!(split.refit.len(), held.iter().filter(|h| !**h).count());
    }
}
