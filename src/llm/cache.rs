//! Keys and values of the tokens a sequence (or a batch of sequences) has seen: the layout the
//! model's attention appends to and reads, saved to disk for a cached prompt prefix.
//!
//! Plain tensors and bookkeeping; never runs the model.

use candle_core::Tensor;

/// Per-layer keys and values of the tokens seen so far. Cloning is cheap (tensors are shared),
/// which is how a cached prompt prefix is reused across questions.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub(super) layers: Vec<Option<(Tensor, Tensor)>>,
    pub(super) len: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Layer `i`'s keys and values, `[1, kv_heads, len, head_dim]` each.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fn layer(&self, i: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(i)?.as_ref()
    }

    /// The cache as named tensors (`k.{layer}`, `v.{layer}`), for saving.
    pub fn to_named(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, slot) in self.layers.iter().enumerate() {
            if let Some((k, v)) = slot {
                out.push((format!("k.{i}"), k.clone()));
                out.push((format!("v.{i}"), v.clone()));
            }
        }
        out
    }

    /// Rebuilds a cache of `n_layer` layers from [`KvCache::to_named`] tensors; `None` when any
    /// layer is missing or the lengths disagree.
    pub fn from_named(
        mut named: std::collections::HashMap<String, Tensor>,
        n_layer: usize,
    ) -> Option<Self> {
        let mut layers = Vec::with_capacity(n_layer);
        let mut len = None;
        for i in 0..n_layer {
            let k = named.remove(&format!("k.{i}"))?;
            let v = named.remove(&format!("v.{i}"))?;
            let l = k.dim(2).ok()?;
            if v.dim(2).ok()? != l || len.is_some_and(|x| x != l) {
                return None;
            }
            len = Some(l);
            layers.push(Some((k, v)));
        }
        Some(Self { layers, len: len? })
    }
}

/// Keys and values of several sequences generated together, in one padded layout: each layer
/// holds `[batch, kv_heads, columns, head_dim]`, and column `j` holds, for each sequence, either
/// one of its tokens or padding that its queries never see. Sequences of different lengths (a
/// shared prompt prefix followed by questions of different lengths, answers that stop at
/// different steps) share one tensor per layer, so a forward step costs one set of kernels for
/// the whole batch.
#[derive(Debug, Clone, Default)]
pub struct BatchCache {
    pub(super) layers: Vec<Option<(Tensor, Tensor)>>,
    /// Per sequence, per column: whether the column holds a real token of that sequence.
    pub(super) valid: Vec<Vec<bool>>,
    /// Per sequence: the position (for RoPE) its next token takes.
    pub(super) next_pos: Vec<usize>,
}

impl BatchCache {
    /// An empty cache for `batch` sequences.
    pub fn new(batch: usize) -> Self {
        Self {
            layers: Vec::new(),
            valid: vec![Vec::new(); batch],
            next_pos: vec![0; batch],
        }
    }

    /// `batch` copies of one sequence's cache (a prompt prefix the batch shares).
    pub fn broadcast(prefix: &KvCache, batch: usize) -> candle_core::Result<Self> {
        let layers = prefix
            .layers
            .iter()
            .map(|slot| {
                slot.as_ref()
                    .map(|(k, v)| -> candle_core::Result<(Tensor, Tensor)> {
                        Ok((
                            k.repeat((batch, 1, 1, 1))?.contiguous()?,
                            v.repeat((batch, 1, 1, 1))?.contiguous()?,
                        ))
                    })
                    .transpose()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            valid: vec![vec![true; prefix.len]; batch],
            next_pos: vec![prefix.len; batch],
        })
    }

    pub fn batch_size(&self) -> usize {
        self.valid.len()
    }

    /// Columns held (the longest sequence's length plus padding).
    pub fn columns(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// Tokens of sequence `i` so far (its next position).
    pub fn seq_len(&self, i: usize) -> usize {
        self.next_pos[i]
    }

    /// Keeps only the sequences at `keep` (indices into the batch, in the new order): finished
    /// answers leave the batch so that later steps do not compute them.
    pub fn retain(&mut self, keep: &[usize]) -> candle_core::Result<()> {
        if keep.len() == self.batch_size() && keep.iter().enumerate().all(|(i, &k)| i == k) {
            return Ok(());
        }
        if let Some(device) = self
            .layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.device().clone())
        {
            let idx: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
            let idx = Tensor::new(idx.as_slice(), &device)?;
            for (k, v) in self.layers.iter_mut().flatten() {
                *k = k.index_select(&idx, 0)?;
                *v = v.index_select(&idx, 0)?;
            }
        }
        self.valid = keep.iter().map(|&i| self.valid[i].clone()).collect();
        self.next_pos = keep.iter().map(|&i| self.next_pos[i]).collect();
        Ok(())
    }
}
